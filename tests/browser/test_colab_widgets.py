"""The widgets on Colab's ipywidgets 7.7.1 in a real browser: the classic Notebook 6.5 front end with
widgetsnbextension 3.6 (the closest to Colab's widget manager that runs here), from .venv-colab, the
environment ``make test-colab`` builds from constraints/colab.txt (ipywidgets 7.7.1, ipykernel 6.17.1,
IPython 7.34.0, notebook 6.5.7).

Opt-in like test_jupyterlab.py: ``make test-colab`` first (it builds .venv-colab), then

    LORA_LAB_BROWSER_TEST=1 .venv/bin/python -m pytest tests/browser/test_colab_widgets.py -v

It copies notebooks 01 and 02 into a scratch folder, starts Notebook 6.5 there on 127.0.0.1 (smoke profile),
runs each notebook, moves a control and checks that the output is redrawn; and it runs notebook 4's training
cell, exactly as committed, after test_jupyterlab.py's smoke set-up, and clicks Stop: on ipykernel 6 the click
reaches the kernel only through jupyter-ui-poll. Screenshots go to ``tests/browser/screenshots/colab-*.png``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LORA_LAB_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("LORA_LAB_SCREENSHOTS", Path(__file__).parent / "screenshots"))
COLAB_VENV = Path(os.environ.get("LORA_LAB_COLAB_VENV", ROOT / ".venv-colab"))
TOKEN = "lora-lab-colab-browser-test"


def _why_skip() -> str | None:
    if os.environ.get("LORA_LAB_BROWSER_TEST") != "1":
        return "the browser test is opt-in: set LORA_LAB_BROWSER_TEST=1 (after make test-colab)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs Playwright for Python: pip install 'lora-lab[browser]'"
    if not Path(CHROMIUM).is_file():
        return f"needs Chromium at {CHROMIUM} (apt-get install chromium, or set LORA_LAB_CHROMIUM)"
    if not (COLAB_VENV / "bin" / "jupyter-notebook").is_file():
        return f"needs the Colab environment with Notebook 6.5 at {COLAB_VENV}: run make test-colab first"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


def _jupyterlab_test():
    """test_jupyterlab.py's helpers (its scratch set-up for notebook 4's training cell)."""
    spec = importlib.util.spec_from_file_location("lora_lab_test_jupyterlab", Path(__file__).with_name(
        "test_jupyterlab.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Notebook 6.5 (classic) from .venv-colab on a scratch copy of notebooks 01 and 02; smoke profile, live
    views on."""
    root = tmp_path_factory.mktemp("colab-course")
    for name in ("01_low_rank.ipynb", "02_lora_layer.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, root / name)
    lab = _jupyterlab_test()
    lab._notebook(root / "live_training.ipynb", lab.LIVE_SETUP,
                  lab._cell_source("04_lora_finetuning.ipynb", "LiveTraining"))
    port = _free_port()
    env = {**os.environ, "LORA_LAB_PROFILE": "smoke", "LORA_LAB_WIDGETS": "1", "LORA_LAB_PROGRESS": "0",
           "PYTHONWARNINGS": "ignore::DeprecationWarning", "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),
           "PATH": f"{COLAB_VENV / 'bin'}:{os.environ.get('PATH', '')}"}
    env.pop("MPLBACKEND", None)
    env.pop("VIRTUAL_ENV", None)
    log = open(root / "notebook.log", "w")
    proc = subprocess.Popen([str(COLAB_VENV / "bin" / "jupyter-notebook"), "--no-browser", f"--port={port}",
                             "--ip=127.0.0.1", f"--NotebookApp.token={TOKEN}", f"--NotebookApp.notebook_dir={root}",
                             "--allow-root", "--NotebookApp.terminals_enabled=False"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"Notebook exited: {(root / 'notebook.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        raise RuntimeError("Notebook 6.5 did not start within 60 s")
    yield url, root
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def pages(browser, request):
    """Pages opened by a test; on failure each leaves a full-page screenshot (``FAILED-<test>-<n>.png``)."""
    opened = []
    yield opened
    rep = getattr(request.node, "rep_call", None)
    for i, page in enumerate(opened):
        if rep is not None and rep.failed and not page.is_closed():
            page.screenshot(path=str(SHOTS / f"FAILED-{request.node.name}-{i}.png"), full_page=True)
        if not page.is_closed():
            page.close()


def _open(browser, server, name, pages):
    url, _ = server
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    pages.append(page)
    page.set_default_timeout(60_000)
    # widgetsnbextension 3.6 first asks the kernel for its widgets over a "jupyter.widget.control" comm, which
    # ipywidgets 7 does not offer; its fallback then resets the widget manager, removing any widget displayed
    # before it finishes. So wait for that (a console warning) before running cells, as a person would.
    with page.expect_console_message(lambda m: "fallback to fetching individual model state" in m.text,
                                     timeout=90_000):
        page.goto(f"{url}/notebooks/{name}?token={TOKEN}")
    page.wait_for_function("() => window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
                           " && Jupyter.notebook.kernel.is_connected()", timeout=90_000)
    page.wait_for_timeout(2000)
    return page


def _run_all(page, timeout_s=300):
    page.evaluate("() => Jupyter.notebook.execute_all_cells()")
    page.wait_for_function("""() => { const code = Jupyter.notebook.get_cells().filter(c => c.cell_type === 'code');
        return document.querySelector('#kernel_indicator_icon.kernel_idle_icon')
            && code.every(c => typeof c.input_prompt_number === 'number'); }""", timeout=timeout_s * 1000)
    errors = page.evaluate("""() => Jupyter.notebook.get_cells().filter(c => c.cell_type === 'code')
        .flatMap(c => c.output_area.outputs.filter(o => o.output_type === 'error')
        .map(o => o.ename + ': ' + o.evalue))""")
    assert not errors, f"cells raised: {errors}"


def _cell(page, needle):
    cell = page.locator(".cell.code_cell").filter(has=page.locator(".input_area", has_text=needle))
    assert cell.count() == 1, f"expected one cell containing {needle!r}, found {cell.count()}"
    cell.scroll_into_view_if_needed()
    return cell


def _img(cell):
    return cell.locator(".output_area img").first.get_attribute("src")


def _set_slider(cell, index, value):
    """Type a value into the slider's readout (ipywidgets 7: an editable div), as a learner can."""
    readout = cell.locator(".widget-readout").nth(index)
    readout.click()
    readout.press("Control+A")
    readout.type(str(value))
    readout.press("Enter")


def _wait_text(page, cell, text):
    """Wait until the cell shows ``text``. (Notebook 6 replaces an output's element when it is updated in place,
    so the cell is watched, not the output's old element.)"""
    page.wait_for_function("([el, t]) => el.innerText.includes(t)", arg=[cell.element_handle(), text])


def test_01_rank_slider_redraws_on_ipywidgets_7(browser, server, pages):
    page = _open(browser, server, "01_low_rank.ipynb", pages)
    _run_all(page)
    cell = _cell(page, "rank_slider(gray")
    cell.locator(".widget-slider").first.wait_for(timeout=30_000)  # the widget view rendered (widgetsnbextension)
    assert "rank 20: 22,260 numbers stored of 307,200" in cell.inner_text()
    before = _img(cell)
    cell.screenshot(path=str(SHOTS / "colab-01_rank_slider_k20.png"))
    _set_slider(cell, 0, 100)
    _wait_text(page, cell, "rank 100: 111,300 numbers stored of 307,200")
    page.wait_for_function("([el, src]) => el.querySelector('.output_area img').src !== src",
                           arg=[cell.element_handle(), before])
    assert "rank 20:" not in cell.inner_text()  # redrawn in place, not appended
    cell.screenshot(path=str(SHOTS / "colab-01_rank_slider_k100.png"))


def test_02_calculator_redraws_on_ipywidgets_7(browser, server, pages):
    page = _open(browser, server, "02_lora_layer.ipynb", pages)
    _run_all(page)
    calc = _cell(page, "lora_calculator(")
    calc.locator(".widget-dropdown select").first.wait_for(timeout=30_000)
    assert "2,360,834" in calc.inner_text()
    calc.locator(".widget-dropdown select").select_option("gpt2-xl")
    _wait_text(page, calc, "19,664,002")  # rank 16 on GPT-2 XL: LoRA + head
    assert "2,360,834" not in calc.inner_text()
    calc.locator("button", has_text="rsLoRA α/√r").click()
    _wait_text(page, calc, "rsLoRA α/√r with α = 16, r = 16: the update is multiplied by 4")
    calc.screenshot(path=str(SHOTS / "colab-02_calculator_gpt2xl_rslora.png"))


def test_04_stop_button_on_ipykernel_6(browser, server, pages):
    page = _open(browser, server, "live_training.ipynb", pages)
    page.evaluate("() => Jupyter.notebook.execute_all_cells()")
    cell = _cell(page, "LiveTraining")
    stop = cell.locator("button", has_text="Stop after this batch")
    stop.wait_for(timeout=180_000)
    first = _img(cell)
    page.wait_for_function("([el, src]) => { const i = el.querySelector('.output_area img');"
                           " return i && i.src !== src; }",  # the figure grows while it trains
                           arg=[cell.element_handle(), first], timeout=60_000)
    cell.screenshot(path=str(SHOTS / "colab-04_live_training_running.png"))
    stop.click()
    cell.locator("button", has_text="stopped early").wait_for(timeout=60_000)
    _wait_text(page, cell, "epoch(s) kept, the last one partial")
    assert "stopped early:" in cell.inner_text()
    cell.screenshot(path=str(SHOTS / "colab-04_live_training_stopped.png"))
