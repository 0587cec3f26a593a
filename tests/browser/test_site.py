"""The course website (``make site``) in headless Chromium: math, figures, search, links, and no network.

Opt-in like the JupyterLab test: ``make test-site`` (builds the site first), or

    make site && LORA_LAB_BROWSER_TEST=1 .venv/bin/python -m pytest tests/browser/test_site.py -v

build/site/ is served over http on 127.0.0.1 from a thread. Every request to another host is aborted and fails
the test: the site must work with no network (MathJax is bundled, widgets show their saved state). Screenshots
go to ``tests/browser/screenshots/site-*.png`` (git-ignored; ``LORA_LAB_SCREENSHOTS`` moves them).
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "build" / "site"
CHROMIUM = os.environ.get("LORA_LAB_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("LORA_LAB_SCREENSHOTS", Path(__file__).parent / "screenshots"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage"]


def _why_skip() -> str | None:
    if os.environ.get("LORA_LAB_BROWSER_TEST") != "1":
        return "the browser test is opt-in: run `make test-site` (or set LORA_LAB_BROWSER_TEST=1)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs Playwright for Python: pip install 'lora-lab[browser]'"
    if not Path(CHROMIUM).is_file():
        return f"needs Chromium at {CHROMIUM} (apt-get install chromium, or set LORA_LAB_CHROMIUM)"
    if not (SITE / "index.html").is_file():
        return "build/site/ is not built: run `make site` first (make test-site does)"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_Quiet, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server, request):
    """A page whose requests may only go to the local server; bad responses and outside requests are recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside, bad = [], []

    def route(r):
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    pg.on("response", lambda resp: bad.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None)
    pg.on("requestfailed", lambda req: bad.append(f"failed {req.url}") if req.url not in outside else None)
    pg.outside, pg.bad = outside, bad
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        pg.screenshot(path=str(SHOTS / f"FAILED-site-{request.node.name}.png"), full_page=True)
    context.close()
    assert not outside, f"requests to other hosts: {outside}"
    assert not bad, f"broken requests: {bad}"


def _check_links(pg, server):
    """Every link and image on the page that points into the site answers 200."""
    urls = pg.eval_on_selector_all(
        "a[href], img[src], link[href], script[src]",
        "els => els.map(e => e.getAttribute('href') || e.getAttribute('src'))")
    checked = set()
    for url in urls:
        full = urljoin(pg.url, url).split("#")[0]
        if not full.startswith(server) or full in checked:
            continue
        checked.add(full)
        status = pg.request.get(full).status
        assert status == 200, f"{pg.url}: {url} answers {status}"
    return len(checked)


def _open(pg, url):
    pg.goto(url, wait_until="load")
    pg.wait_for_load_state("networkidle")


def test_landing_page(page, server):
    _open(page, server + "index.html")
    assert "LoRA Lab" in page.title()
    for nb in ("01_low_rank", "05_full_vs_lora", "10_claims", "solutions"):
        assert page.locator(f"a[href*='notebooks/{nb}.html']").count() > 0, f"no link to {nb}"
    for text in ("real", "offline", "smoke", "Prerequisites"):
        assert text in page.inner_text("article")
    page.screenshot(path=str(SHOTS / "site-landing.png"), full_page=True)
    assert _check_links(page, server) > 10


@pytest.mark.parametrize("nb", ["02_lora_layer", "01_low_rank"])
def test_lesson_math(page, server, nb):
    _open(page, server + f"notebooks/{nb}.html")
    n_math = page.locator(".math").count()
    assert n_math > 0, "no math on the page"
    page.wait_for_function(f"document.querySelectorAll('mjx-container').length >= {n_math}", timeout=30_000)
    text = page.inner_text("article")
    assert "$$" not in text, "raw $$ left on the page: math not rendered"
    assert "\\mathbb" not in text and "\\top" not in text, "raw TeX left on the page"
    colab = f"https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/{nb}.ipynb"
    assert page.locator(f"a[href='{colab}']").count() > 0, "no Open-in-Colab link with the notebook's URL"
    assert page.locator(".lesson-references a[href*='references.html#ref-hu2021']").count() == 1
    notes = page.locator(".widget-note")
    assert notes.count() >= 1 and "Interactive in JupyterLab or Colab" in notes.first.inner_text()
    page.locator("mjx-container").first.scroll_into_view_if_needed()
    short = nb[:2]
    page.screenshot(path=str(SHOTS / f"site-lesson-{short}-math.png"))
    page.screenshot(path=str(SHOTS / f"site-lesson-{short}-full.png"), full_page=True)
    _check_links(page, server)


def test_lesson_05_figures(page, server):
    _open(page, server + "notebooks/05_full_vs_lora.html")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_load_state("networkidle")
    imgs = page.eval_on_selector_all(
        "article img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth, e.alt])")
    figures = [i for i in imgs if "_images/" in i[0]]
    assert len(figures) >= 5, imgs
    broken = [i for i in imgs if not (i[1] and i[2] > 0)]
    assert not broken, f"images that did not load: {broken}"
    page.screenshot(path=str(SHOTS / "site-lesson-05-figures.png"), full_page=True)
    _check_links(page, server)


def test_solution_toggle(page, server):
    _open(page, server + "notebooks/02_lora_layer.html")
    toggles = page.locator("details.solution")
    if toggles.count() == 0:
        pytest.skip("no exercise of lesson 2 is tagged with its solution yet (tags 'exercise', 'ex-N.M')")
    first = toggles.first
    assert first.get_attribute("open") is None, "a solution is open before it is asked for"
    first.locator("summary").click()
    assert first.get_attribute("open") is not None
    first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "site-lesson-02-solution-open.png"))


def test_search(page, server):
    _open(page, server + "search.html?q=rank")
    page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    hits = page.locator("#search-results ul.search li").count()
    assert hits >= 5, f"searching 'rank' found {hits} pages"
    page.screenshot(path=str(SHOTS / "site-search-rank.png"), full_page=True)


def test_lesson_links_its_slides(page, server):
    _open(page, server + "notebooks/02_lora_layer.html")
    link = page.locator(".lesson-references a[href$='.slides.html']")
    if link.count() == 0:
        pytest.skip("no slides in this build: run `make slides` before `make site`")
    deck = urljoin(page.url, link.first.get_attribute("href"))
    assert deck == server + "slides/02_lora_layer.slides.html"
    _open(page, deck)
    page.wait_for_selector(".reveal .slides section", timeout=30_000)
    page.screenshot(path=str(SHOTS / "site-lesson-02-slides.png"))
