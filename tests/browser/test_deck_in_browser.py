"""A lesson's reveal.js deck (``make slides``, :mod:`lora_lab.course.slides`) in headless Chromium, offline.

Opt-in like the JupyterLab test (``make test-browser``, or ``LORA_LAB_BROWSER_TEST=1``; Playwright for Python and
Debian's chromium, or ``LORA_LAB_CHROMIUM``). It builds notebook 1's deck into a scratch folder, serves it from
127.0.0.1, and checks that no request leaves the machine (every other host is blocked and recorded), that nothing
the deck loads is missing, and that the arrow keys step through the slides to rendered math and a figure with
its alt text. Screenshots go to ``tests/browser/screenshots/`` (``slides_*.png``).
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("LORA_LAB_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("LORA_LAB_SCREENSHOTS", Path(__file__).parent / "screenshots"))
DECK = "01_low_rank"


def _why_skip() -> str | None:
    if os.environ.get("LORA_LAB_BROWSER_TEST") != "1":
        return "the browser test is opt-in: run `make test-browser` (or set LORA_LAB_BROWSER_TEST=1)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs Playwright for Python: pip install 'lora-lab[browser]'"
    if not Path(CHROMIUM).is_file():
        return f"needs Chromium at {CHROMIUM} (apt-get install chromium, or set LORA_LAB_CHROMIUM)"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Notebook 1's deck with its local reveal.js and MathJax, served from 127.0.0.1 on a free port."""
    from lora_lab.course import slides

    out = tmp_path_factory.mktemp("slides")
    assert [p.name for p in slides.build(out, names=[DECK])] == [f"{DECK}.slides.html"]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{DECK}.slides.html"
    server.shutdown()


def _state(page):
    return page.evaluate("""() => {
        const s = Reveal.getCurrentSlide(), i = Reveal.getIndices();
        const shown = el => { if (!el) return false; const r = el.getBoundingClientRect();
                              return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden'; };
        const img = [...s.querySelectorAll('img')].find(shown);
        return {h: i.h, v: i.v, f: i.f === undefined ? -1 : i.f, down: Reveal.availableRoutes().down,
                math: shown(s.querySelector('mjx-container')),
                img: img ? {alt: img.alt, w: img.naturalWidth} : null};
    }""")


def test_deck_steps_through_math_and_a_figure_offline(served):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    outside, missing = [], []

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", only_local)
        page.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(served)
        page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=30_000)
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        page.evaluate("() => MathJax.startup.promise")
        page.screenshot(path=str(SHOTS / "slides_01_title.png"))
        seen = [_state(page)]
        math_at = figure_at = None
        for _ in range(60):  # down through a section's subslides, else right to the next section
            page.keyboard.press("ArrowDown" if seen[-1]["down"] else "ArrowRight")
            page.wait_for_timeout(1200)  # the slide transition (reveal.js default: about 0.8 s), before any screenshot
            state = _state(page)
            key = lambda s: (s["h"], s["v"], s["f"])  # noqa: E731
            assert key(state) != key(seen[-1]), f"the arrow key did not move the deck from {key(state)}"
            seen.append(state)
            if state["math"] and math_at is None:
                math_at = key(state)
                page.screenshot(path=str(SHOTS / "slides_01_math.png"))
            if state["img"] and figure_at is None:
                figure_at = key(state)
                page.screenshot(path=str(SHOTS / "slides_01_figure.png"))
            if math_at and figure_at:
                break
        browser.close()
    assert math_at is not None, "no slide with rendered math (MathJax) was reached"
    assert figure_at is not None, "no slide with a figure was reached"
    fig = next(s["img"] for s in seen if s["img"])
    assert fig["w"] > 100 and len(fig["alt"].split()) >= 8, f"the figure has no image or no alt text: {fig}"
    assert len({s["h"] for s in seen}) >= 3, "the deck did not move through several slides"
    assert outside == [], f"requests left 127.0.0.1: {outside}"
    assert missing == [], f"the deck asked for files that are not there: {missing}"
