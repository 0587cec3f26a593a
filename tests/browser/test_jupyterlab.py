"""The course's widgets in a real JupyterLab, driven by headless Chromium (Playwright for Python).

Opt-in, because it needs a browser and takes a few minutes: ``make test-browser``, or

    LORA_LAB_BROWSER_TEST=1 .venv/bin/python -m pytest tests/browser -v

It needs ``pip install "lora-lab[browser]"`` (Playwright for Python) and a Chromium: Debian's ``chromium``
(``apt-get install chromium``) at /usr/bin/chromium, or set ``LORA_LAB_CHROMIUM`` to another binary. Playwright's
own browser download is not needed.

What it does: copies notebooks 01 and 02 into a scratch folder (so JupyterLab's autosave never touches the
repository), starts JupyterLab there with the kernel in the smoke profile, runs each notebook, moves the
widgets and checks that the figure and the numbers change. Notebooks 04 and 06 take minutes in the offline
profile, so their widget cells are run, exactly as committed, in two small scratch notebooks whose first cell
builds what they need on the smoke profile's tiny random GPT-2 (a model, data, two adapters): the live
training view (the figure must grow, Stop must end training with the history kept) and the message box
(a typed message must get a prediction). Screenshots go to ``tests/browser/screenshots/`` (git-ignored;
``LORA_LAB_SCREENSHOTS`` moves them).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LORA_LAB_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("LORA_LAB_SCREENSHOTS", Path(__file__).parent / "screenshots"))
TOKEN = "lora-lab-browser-test"


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


def _cell_source(notebook: str, needle: str) -> str:
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    found = [c for c in cells if c["cell_type"] == "code" and needle in "".join(c["source"])]
    assert len(found) == 1, f"{notebook}: expected one cell containing {needle!r}, found {len(found)}"
    return "".join(found[0]["source"])


def _notebook(path: Path, *sources: str) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


SMOKE_SETUP = '''\
# Scratch set-up for the browser test: what notebook {nb} has built before its widget cell, on the smoke
# profile's tiny random GPT-2 (seconds instead of minutes; the numbers mean nothing).
import copy, dataclasses, tempfile
from pathlib import Path
import pandas as pd
import torch
import lora_lab
from lora_lab.experiments.profiles import get_settings, load_backbone, load_splits
from lora_lab.train import apply_method, train_classifier
from lora_lab.utils.machine import set_seed, timed
from lora_lab.utils.plots import style
style()
S = dataclasses.replace(get_settings("smoke"), epochs={epochs})
device = torch.device("cpu")
bb = load_backbone(S, device)
train_df, val_df, test_df = load_splits(S)
train_ds, val_ds = bb.datasets(train_df, val_df)
val_loader = bb.loader(val_ds, S.batch_size)
set_seed(S.seed)
'''

LIVE_SETUP = SMOKE_SETUP.format(nb="04", epochs=400) + '''\
model = apply_method(bb.classifier(device=device), "lora", rank=16, alpha=16)
'''

PLAYGROUND_SETUP = SMOKE_SETUP.format(nb="06", epochs=1) + '''\
base = bb.classifier(device=device)
base_state = {k: v.clone() for k, v in base.state_dict().items()}
workdir = Path(tempfile.mkdtemp())
questions = train_df.assign(label=train_df.text.str.contains("?", regex=False).map({True: "spam", False: "ham"}),
                            text=train_df.text.str.replace("?", "", regex=False))
for task, df in (("spam", train_df), ("question", questions)):
    model = bb.classifier(device=device)
    model.load_state_dict(base_state)
    apply_method(model, "lora", rank=16, alpha=16)
    loader = bb.loader(bb.datasets(df)[0], S.batch_size, shuffle=True)
    train_classifier(model, loader, None, epochs=1, lr=1e-3, log=None)
    lora_lab.save_adapter(model, workdir / task, base_model=bb.name, task=task)
model = bb.classifier(device=device)
model.load_state_dict(base_state)
lora_lab.load_adapter(model, workdir / "spam")
samples = ["Had your mobile 11 months or more? U R entitled to Update to the latest colour mobiles FREE!",
           "I'll be there at 5, see you at the station", "what time do you finish work"]
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a scratch folder holding copies of notebooks 01 and 02 and the two scratch notebooks;
    the kernel runs in the smoke profile with the live views on."""
    root = tmp_path_factory.mktemp("course")
    for name in ("01_low_rank.ipynb", "02_lora_layer.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, root / name)
    _notebook(root / "live_training.ipynb", LIVE_SETUP, _cell_source("04_lora_finetuning.ipynb", "LiveTraining"))
    _notebook(root / "playground.ipynb", PLAYGROUND_SETUP,
              _cell_source("06_adapters.ipynb", "message_playground("))
    settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell in the DOM (no virtual scrolling), so the test can find cells far down a notebook
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port = _free_port()
    env = {**os.environ, "LORA_LAB_PROFILE": "smoke", "LORA_LAB_WIDGETS": "1", "LORA_LAB_PROGRESS": "0",
           "PYTHONWARNINGS": "ignore::DeprecationWarning", "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"), "JUPYTER_CONFIG_DIR": str(root / ".jupyter")}
    env.pop("MPLBACKEND", None)
    log = open(root / "jupyterlab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                             "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
                             "--LabApp.expose_app_in_browser=True", "--allow-root",
                             "--LabApp.news_url=", "--ServerApp.terminals_enabled=False"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {(root / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        raise RuntimeError("JupyterLab did not start within 60 s")
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


def _open(browser, lab, name, pages=None):
    url, _ = lab
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    if pages is not None:
        pages.append(page)
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab/tree/{name}?token={TOKEN}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function("""() => { const w = window.jupyterapp?.shell?.currentWidget;
        return w && w.sessionContext?.session?.kernel?.status === 'idle'; }""", timeout=90_000)
    no = page.locator(".jp-Notification-Toast button", has_text="No")  # "get notified about Jupyter news?"
    try:
        no.first.click(timeout=3000)
    except Exception:  # no such toast (an older or newer JupyterLab): nothing to dismiss
        pass
    return page


def _run_all(page, timeout_s=300, wait=True):
    # not awaited: the command's promise settles only when every cell has run
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    if wait:
        _wait_idle(page, timeout_s)


def _wait_idle(page, timeout_s=300):
    page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
        const code = w.content.widgets.filter(c => c.model.type === 'code');
        return w.sessionContext.session.kernel.status === 'idle'
            && code.every(c => c.model.executionCount !== null); }""", timeout=timeout_s * 1000)
    errors = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .filter(c => c.model.type === 'code')
        .flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
        .map(o => o.ename + ': ' + o.evalue))""")
    assert not errors, f"cells raised: {errors}"


def _cell(page, needle):
    cell = page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=needle))
    assert cell.count() == 1, f"expected one cell containing {needle!r}, found {cell.count()}"
    cell.scroll_into_view_if_needed()
    return cell


def _img(cell):
    return cell.locator(".jp-OutputArea-output img").first.get_attribute("src")


def _set_slider(cell, index, value):
    """Type a value into the slider's readout, as a learner can (the same as dragging to it)."""
    readout = cell.locator(".widget-readout").nth(index)
    readout.click()
    readout.press("Control+A")
    readout.type(str(value))
    readout.press("Enter")


def _shot(target, name):
    target.screenshot(path=str(SHOTS / name))


def test_01_rank_slider_redraws_photo_and_numbers(browser, lab, pages):
    page = _open(browser, lab, "01_low_rank.ipynb", pages)
    _run_all(page)
    cell = _cell(page, "rank_slider(gray")
    summary = cell.locator(".jp-OutputArea-output", has_text="numbers stored of")
    assert summary.inner_text().startswith("rank 20: 22,260 numbers stored of 307,200")
    before = _img(cell)
    _shot(cell, "01_rank_slider_k20.png")
    _set_slider(cell, 0, 100)
    page.wait_for_function("(el) => el.innerText.startsWith('rank 100:')", arg=summary.element_handle())
    assert "111,300 numbers stored" in summary.inner_text()
    page.wait_for_function("([el, src]) => el.querySelector('img').src !== src",
                           arg=[cell.element_handle(), before])
    _shot(cell, "01_rank_slider_k100.png")
    spec = _cell(page, "spectrum_slider(")
    spec_summary = spec.locator(".jp-OutputArea-output", has_text="relative error")
    spec_before, text_before = _img(spec), spec_summary.inner_text()
    _set_slider(spec, 0, 0.6)  # the decay slider
    page.wait_for_function("(el) => el.innerText.startsWith('decay 0.6,')", arg=spec_summary.element_handle())
    assert spec_summary.inner_text() != text_before and _img(spec) != spec_before
    _shot(spec, "01_spectrum_decay_0.6.png")
    page.close()


def test_02_calculator_and_scaling_explorer(browser, lab, pages):
    page = _open(browser, lab, "02_lora_layer.ipynb", pages)
    _run_all(page)
    calc = _cell(page, "lora_calculator(")
    table = calc.locator(".jp-OutputArea-output", has_text="trainable")
    assert "2,360,834" in table.inner_text()
    calc.locator("select").select_option("gpt2-xl")
    page.wait_for_function("(el) => el.innerText.includes('gpt2-xl')", arg=table.element_handle())
    assert "19,664,002" in table.inner_text()  # rank 16 on GPT-2 XL: LoRA + head
    _set_slider(calc, 0, 64)
    page.wait_for_function("(el) => el.innerText.includes('rank 64')", arg=table.element_handle())
    calc.locator("button", has_text="rsLoRA α/√r").click()
    page.wait_for_function("(el) => el.innerText.includes('multiplied by 2')", arg=table.element_handle())
    _shot(calc, "02_calculator_gpt2xl_r64_rslora.png")
    exp = _cell(page, "scaling_explorer(")
    summary = exp.locator(".jp-OutputArea-output", has_text="after one Adam step")
    before = _img(exp)
    assert "after one Adam step = 0.038" in summary.inner_text()
    exp.locator("button", has_text="textbook").click()
    exp.locator("button", has_text="raw α").click()
    page.wait_for_function("(el) => el.innerText.includes(\"raw α, init 'textbook'\")", arg=summary.element_handle())
    assert _img(exp) != before
    _shot(exp, "02_scaling_raw_alpha_textbook.png")
    page.close()


def test_04_live_training_grows_and_stops_cleanly(browser, lab, pages):
    page = _open(browser, lab, "live_training.ipynb", pages)
    _run_all(page, wait=False)
    cell = _cell(page, "LiveTraining")
    stop = cell.locator("button", has_text="Stop after this batch")
    page.wait_for_function("""() => document.querySelector('.jp-OutputArea-output[data-mime-type*="error"]')
        || [...document.querySelectorAll('button')].some(b => b.innerText.includes('Stop after this batch'))""",
                           timeout=120_000)
    assert page.locator('.jp-OutputArea-output[data-mime-type*="error"]').count() == 0, \
        page.locator('.jp-OutputArea-output[data-mime-type*="error"]').first.inner_text()[:2000]
    first = _img(cell)
    page.wait_for_function("([el, src]) => { const i = el.querySelector('.jp-OutputArea-output img');"
                           " return i && i.src !== src; }", arg=[cell.element_handle(), first], timeout=60_000)
    _shot(cell, "04_live_training_running.png")
    stop.click()
    cell.locator("button", has_text="stopped early").wait_for(timeout=60_000)
    _wait_idle(page, 120)
    text = cell.locator(".jp-OutputArea").inner_text()
    assert "stopped early:" in text and "epoch(s) kept" in text
    _shot(cell, "04_live_training_stopped.png")
    page.close()


def test_06_message_box_gives_a_prediction(browser, lab, pages):
    page = _open(browser, lab, "playground.ipynb", pages)
    _run_all(page)
    cell = _cell(page, "message_playground(")
    result = cell.locator(".jp-OutputArea-output", has_text="median latency")
    assert "tokens" in result.inner_text()
    cell.locator(".widget-dropdown select").select_option("spam adapter")
    box = cell.locator(".widget-text input")
    box.fill("")
    box.press("Enter")
    page.wait_for_function("(el) => el.innerText.includes('type a message first')", arg=result.element_handle())
    box.fill("WINNER!! Claim your FREE prize now, call 09061701461")
    box.press("Enter")
    page.wait_for_function("(el) => el.innerText.includes('with probability') && el.innerText.includes('spam adapter')",
                           arg=result.element_handle())
    unmerged = result.inner_text()
    assert ("ham" in unmerged or "spam" in unmerged) and "unmerged" in unmerged
    _shot(cell, "06_message_spam_adapter.png")
    cell.locator("button", has_text="merged").click()
    page.wait_for_function("(el) => el.innerText.includes('merged into the weights')", arg=result.element_handle())
    _shot(cell, "06_message_spam_adapter_merged.png")
    page.close()
