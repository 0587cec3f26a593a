"""Check the built website: every internal link and image resolves, and nothing is loaded from another host.

    python site/check_site.py [build/site] [--require-alt]

Fails (exit 1) on
* a link, image, script or stylesheet pointing to a file of the site that does not exist, or to an anchor
  (``page.html#section``) that the page does not have (except in the reveal.js decks under slides/, whose
  anchors are routed by JavaScript);
* a script, stylesheet, image, iframe or other resource loaded from another host (``http(s)://...``, ``//...``),
  in the HTML or in a CSS ``url(...)`` / ``@import`` of a stylesheet a page loads: the site must work with no
  network. Links (``<a href>``)
  to other hosts are fine: they load nothing until clicked;
* with ``--require-alt``: an ``<img>`` without alt text. Without it, images lacking alt text are counted and listed.
"""
from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOADING = {("script", "src"), ("img", "src"), ("iframe", "src"), ("source", "src"), ("video", "src"),
           ("audio", "src"), ("embed", "src"), ("object", "data"), ("video", "poster"), ("input", "src")}
LINK_LOADS = {"stylesheet", "icon", "preload", "modulepreload", "prefetch", "manifest", "apple-touch-icon",
              "shortcut"}


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str, bool]] = []  # (tag, attr, value, loads)
        self.images: list[tuple[str, str | None]] = []  # (src, alt)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        if tag == "link" and a.get("href"):
            rels = set((a.get("rel") or "").lower().split())
            self.refs.append((tag, "href", a["href"], bool(rels & LINK_LOADS)))
        elif tag == "a" and a.get("href") is not None:
            self.refs.append((tag, "href", a["href"], False))
        for t, attr in LOADING:
            if tag == t and a.get(attr):
                self.refs.append((tag, attr, a[attr], True))
        if tag in ("img", "source") and a.get("srcset"):
            for part in a["srcset"].split(","):
                if part.strip():
                    self.refs.append((tag, "srcset", part.split()[0], True))
        if tag == "img":
            self.images.append((a.get("src", ""), a.get("alt")))

    handle_startendtag = handle_starttag


def _external(url: str) -> bool:
    return bool(re.match(r"^(https?:)?//", url, flags=re.I))


def check(site: Path, require_alt: bool = False) -> dict:
    site = site.resolve()
    pages: dict[Path, _Page] = {}
    for f in sorted(site.rglob("*.html")):
        if f.relative_to(site).parts[0] in ("_static", "_sources"):
            continue  # the themes' Jinja macro files, not pages
        p = _Page()
        p.feed(f.read_text(encoding="utf-8", errors="replace"))
        pages[f] = p
    errors: list[str] = []
    no_alt: list[str] = []
    n_links = n_images = 0
    for f, page in pages.items():
        rel = f.relative_to(site)
        for tag, attr, url, loads in page.refs:
            url = url.strip()
            if not url or url.startswith(("mailto:", "javascript:", "data:", "tel:")):
                continue
            if _external(url):
                if loads:
                    errors.append(f"{rel}: <{tag} {attr}> loads from another host: {url}")
                continue
            parts = urlsplit(url)
            if parts.scheme:  # another scheme (e.g. a custom protocol): not ours to check
                continue
            n_links += 1
            target = f if not parts.path else (f.parent / unquote(parts.path)).resolve()
            if parts.path.endswith("/") or target.is_dir():
                target = target / "index.html"
            if site not in target.parents and target != site:
                errors.append(f"{rel}: <{tag} {attr}> points outside the site: {url}")
                continue
            if not target.is_file():
                errors.append(f"{rel}: <{tag} {attr}> broken: {url}")
                continue
            frag = unquote(parts.fragment)
            # reveal.js decks route #fragments in JavaScript: no element has those ids
            routed = target.relative_to(site).parts[0] == "slides"
            if frag and target.suffix == ".html" and target in pages and frag not in pages[target].ids and not routed:
                errors.append(f"{rel}: <{tag} {attr}> anchor #{frag} not found in {target.relative_to(site)}")
        for src, alt in page.images:
            n_images += 1
            if not (alt or "").strip():
                no_alt.append(f"{rel}: {src}")
    # the stylesheets the pages load (not, e.g., reveal.js's unused themes that fetch Google fonts)
    loaded_css = set()
    for f, page in pages.items():
        for tag, attr, url, loads in page.refs:
            path = urlsplit(url.strip()).path
            if loads and path.endswith(".css") and not _external(url.strip()):
                loaded_css.add((f.parent / unquote(path)).resolve())
    for css in sorted(c for c in loaded_css if c.is_file()):
        text = css.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"""(?:url\(\s*['"]?|@import\s+['"])((?:https?:)?//[^'")\s]+)""", text):
            errors.append(f"{css.relative_to(site)}: loads from another host: {m.group(1)}")
    if require_alt:
        errors += [f"image without alt text: {x}" for x in no_alt]
    return {"pages": len(pages), "links": n_links, "images": n_images, "no_alt": no_alt, "errors": errors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", nargs="?", default=str(Path(__file__).resolve().parents[1] / "build" / "site"))
    ap.add_argument("--require-alt", action="store_true", help="fail on images without alt text")
    args = ap.parse_args(argv)
    r = check(Path(args.site), args.require_alt)
    for e in r["errors"]:
        print("ERROR", e)
    if r["no_alt"] and not args.require_alt:
        print(f"{len(r['no_alt'])} of {r['images']} images have no alt text (--require-alt makes this an error):")
        for x in r["no_alt"][:50]:
            print("  ", x)
    print(f"check_site: {r['pages']} HTML pages, {r['links']} internal links and resources, {r['images']} images, "
          f"{len(r['no_alt'])} without alt text, {len(r['errors'])} errors")
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
