"""Reveal.js slides of the lessons, for a 45-60 minute walkthrough each: ``python -m lora_lab.slides build/slides``
(``make slides``). Nothing is executed: the decks show the committed outputs.

Each lesson's cells carry ``slideshow.slide_type`` (a section heading starts a slide; the Colab install, import
and exercise-check cells are skipped; ``tests/test_course_tags.py`` checks it), and plotting cells tagged
``slides-hide-input`` show their figure without their code. The export is nbconvert's ``slides`` exporter
(what ``jupyter nbconvert --to slides`` runs) with the template in ``lora_lab/course/slides_template`` that loads
everything from beside the deck, so a deck opens with no network at all:

* ``build/slides/reveal.js/``: reveal.js 5 (its ``dist/`` and the notes plugin), from the PyPI package
  sphinx-revealjs, which ships it;
* ``build/slides/mathjax/``: MathJax 3 (``tex-chtml-full.js`` and its fonts), from the PyPI package
  sphinx-mathjax-offline (the copy the website uses too),

both installed by ``pip install "lora-lab[slides]"`` (``make slides`` does it), so a fresh clone makes its decks
with no network once the packages are installed. No jQuery, RequireJS, Mermaid
or widget manager is loaded (the template drops them), and remote badge images in the markdown become plain
links. Serve the folder (``python -m http.server -d build/slides``) and open ``01_low_rank.slides.html``.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import sys
from pathlib import Path

from ..utils.machine import checkout_root

ROOT = checkout_root() or Path.cwd()  # decks are made from a checkout's notebooks/
NOTEBOOKS = ROOT / "notebooks"
TEMPLATES = Path(__file__).resolve().parent / "slides_template"
# the JavaScript the decks load: (Python package that ships it, its folder there, what of it is copied)
ASSETS = {"reveal.js": ("sphinx_revealjs", "_static/revealjs", ("dist/", "plugin/notes/")),
          "mathjax": ("sphinx-mathjax-offline", "static/mathjax",
                      ("tex-chtml-full.js", "output/chtml/", "input/tex/extensions/", "ui/", "a11y/"))}
_REMOTE_IMAGE = re.compile(r"!\[([^\]]*)\]\((https?://[^)\s]+)\)")
_NOTEBOOK_LINK = re.compile(r"\]\(([\w.-]+)\.ipynb(#[^)\s]*)?\)")
# where a deck's link to a notebook without a deck (the solutions) goes: the notebook on the repository's site
NOTEBOOK_URL = "https://github.com/lora-lab/lora-lab/blob/main/notebooks/{}.ipynb"


def asset_folder(package: str, folder: str) -> Path:
    """Where an installed Python package keeps the files a deck loads (e.g. reveal.js inside sphinx-revealjs)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"slides: the package {package} is not installed; it ships the JavaScript the decks load. "
                         'Install it with pip install "lora-lab[slides]" (make slides does)')
    return Path(spec.origin).parent / folder


def copy_assets(src: Path, dest: Path, keep) -> None:
    """Copy the files of ``src`` whose path (relative to it) is in ``keep`` or below a ``keep`` folder (``"x/"``)
    into ``dest``, replacing what was there."""
    if dest.exists():
        shutil.rmtree(dest)
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src).as_posix()
        if f.is_file() and any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in keep):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / rel)


def local_images_only(nb):
    """Markdown images from the web (the Colab badge) become links: a deck must not fetch anything."""
    for c in nb.cells:
        if c.cell_type == "markdown":
            c.source = _REMOTE_IMAGE.sub(lambda m: m.group(1) or "image", c.source)
    return nb


def notebook_links(nb, decks):
    """A link to another notebook (``solutions.ipynb``) points at its deck when it has one, else at the notebook
    in the repository: next to the decks there is no ``.ipynb`` to open."""
    def target(m):
        name, anchor = m.group(1), m.group(2) or ""
        return f"]({name}.slides.html{anchor})" if name in decks else f"]({NOTEBOOK_URL.format(name)}{anchor})"

    for c in nb.cells:
        if c.cell_type == "markdown":
            c.source = _NOTEBOOK_LINK.sub(target, c.source)
    return nb


def exporter():
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    cfg = Config()
    cfg.SlidesExporter.reveal_url_prefix = "reveal.js"
    cfg.SlidesExporter.reveal_theme = "white"  # "simple" and others import Google fonts; white ships its own
    cfg.SlidesExporter.reveal_scroll = True
    cfg.SlidesExporter.reveal_number = "c/t"
    cfg.SlidesExporter.reveal_width, cfg.SlidesExporter.reveal_height = "1280", "820"  # code lines are 100+ wide
    cfg.TemplateExporter.extra_template_basedirs = [str(TEMPLATES)]
    cfg.SlidesExporter.template_name = "lora-reveal"
    cfg.TagRemovePreprocessor.enabled = True
    cfg.TagRemovePreprocessor.remove_input_tags = {"slides-hide-input"}
    return SlidesExporter(config=cfg)


def build(out: Path, notebooks: Path = NOTEBOOKS, names=None) -> list[Path]:
    """Write ``<name>.slides.html`` for every lesson (or those in ``names``) and the local assets into ``out``."""
    import nbformat

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for folder, (package, inside, keep) in ASSETS.items():
        copy_assets(asset_folder(package, inside), out / folder, keep)
    ex = exporter()
    written = []
    lessons = [src for src in sorted(Path(notebooks).glob("*.ipynb")) if src.name != "solutions.ipynb"]
    decks = {src.stem for src in lessons}
    for src in lessons:
        if names and src.stem not in names and src.name not in names:
            continue
        nb = notebook_links(local_images_only(nbformat.read(src, as_version=4)), decks)
        html, _ = ex.from_notebook_node(nb, resources={"metadata": {"name": src.stem}, "mathjax_local": "mathjax"})
        dest = out / f"{src.stem}.slides.html"
        dest.write_text(html, encoding="utf-8")
        written.append(dest)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lora_lab.slides", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="build/slides")
    ap.add_argument("names", nargs="*", help="only these lessons (e.g. 01_low_rank)")
    args = ap.parse_args(argv)
    written = build(Path(args.out), names=args.names)
    print(f"slides: {len(written)} decks in {args.out} (serve it: python -m http.server -d {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
