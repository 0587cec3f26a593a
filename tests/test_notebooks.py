"""The committed notebooks as a reader on GitHub sees them: executed, from the offline profile (never smoke),
no warnings saved, Colab badges and install cells pointing at the repository named in pyproject.toml."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPO_URL = re.search(r'^Repository = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
REPO = REPO_URL.removeprefix("https://github.com/")
EXPERIMENTS = ("04", "05", "06", "07", "solutions")


def cells(nb):
    return json.loads(nb.read_text())["cells"]


def outputs_text(nb):
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for c in cells(nb) if c["cell_type"] == "code" for o in c.get("outputs", []))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_and_install_cell_use_the_repository(nb):
    cs = cells(nb)
    badge = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{nb.name}"
    assert badge in "".join(cs[0]["source"]), f"{nb.name}: first cell needs the Colab badge {badge}"
    install = [c for c in cs if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])]
    assert len(install) == 1, f"{nb.name}: one Colab install cell"
    src = "".join(install[0]["source"])
    assert f"git+{REPO_URL}.git" in src, f"{nb.name}: the install cell must install from {REPO_URL}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_on_colab_then_shows_the_lesson_card(nb):
    """The first thing a class sees: which profile runs, how to switch it, how long the lesson takes. nbval runs
    this cell (no nbval-skip), so the card is exercised in CI in the smoke profile."""
    first = next(c for c in cells(nb) if c["cell_type"] == "code")
    src = "".join(first["source"])
    assert "google.colab" in src and src.index("google.colab") < src.index("lesson_card(")
    assert f'lesson_card("{nb.stem}")' in src
    assert "nbval-skip" not in first.get("metadata", {}).get("tags", [])
    shown = "".join("".join(o.get("text", "")) for o in first.get("outputs", []))
    assert "profile: offline" in shown and "LORA_LAB_PROFILE" in shown, f"{nb.name}: the saved card is missing"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_outputs_and_no_warnings(nb):
    code = [c for c in cells(nb) if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), f"{nb.name} is committed without outputs"
    for c in code:
        if c.get("outputs"):
            assert c.get("execution_count") is not None, f"{nb.name}: outputs without execution_count"
        for o in c.get("outputs", []):
            assert o.get("name") != "stderr", f"{nb.name}: stderr saved: {''.join(o.get('text', ''))[:200]}"
            assert o.get("output_type") != "error", f"{nb.name}: an error is saved"


@pytest.mark.parametrize("nb", [n for n in NOTEBOOKS if n.name.startswith(EXPERIMENTS)], ids=lambda p: p.name)
def test_experiment_notebooks_show_real_offline_results(nb):
    text = outputs_text(nb)
    assert "SMOKE RUN" not in text and "MEAN NOTHING" not in text, f"{nb.name} is committed with smoke outputs"
    assert "profile=offline" in text and "all-MiniLM-L6-v2" in text, f"{nb.name}: not an offline-profile run"


@pytest.mark.parametrize("nb", [n for n in NOTEBOOKS if "solution" not in n.name], ids=lambda p: p.name)
def test_lesson_notebooks_have_checked_cells(nb):
    checked = [c for c in cells(nb) if c["cell_type"] == "code" and
               "".join(c["source"]).lstrip().startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= 2, f"{nb.name}: {len(checked)} cells marked NBVAL_CHECK_OUTPUT (want >= 2)"
    for c in checked:
        assert c.get("outputs"), f"{nb.name}: a checked cell has no saved output to compare"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_placeholders_left(nb):
    text = "".join("".join(c["source"]) for c in cells(nb))
    assert not re.search(r"\b(TAKEAWAYS|RUNINFO|SWEEP_TEXT|DELTA_TEXT|CROSS_TEXT|TODO)\b", text)


MAX_MARKDOWN_WORDS, MAX_OUTPUT_LINES = 250, 30  # the course's rule: no walls of text, in prose or in output


def output_lines(cell) -> int:
    """Lines a reader sees in a code cell's saved output: printed text, and the text of results that are not a
    figure (a figure's text/plain is only its repr, hidden behind the picture)."""
    n = 0
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            n += len("".join(o["text"]).rstrip("\n").splitlines())
        elif "data" in o and "image/png" not in o["data"]:
            n += len("".join(o["data"].get("text/plain", "")).rstrip("\n").splitlines())
    return n


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_walls_of_text_or_output(nb):
    walls = [f"cell {i}: {len(''.join(c['source']).split())} words of markdown" for i, c in enumerate(cells(nb))
             if c["cell_type"] == "markdown" and len("".join(c["source"]).split()) > MAX_MARKDOWN_WORDS]
    walls += [f"cell {i}: {output_lines(c)} lines of output" for i, c in enumerate(cells(nb))
              if c["cell_type"] == "code" and output_lines(c) > MAX_OUTPUT_LINES]
    assert not walls, (f"{nb.name}: split, cut or summarise (at most {MAX_MARKDOWN_WORDS} words a markdown cell, "
                       f"{MAX_OUTPUT_LINES} lines an output): {walls}")


def test_the_wall_test_counts_what_a_reader_sees():
    printed = {"outputs": [{"output_type": "stream", "text": ["a\n", "b\n"]},
                           {"output_type": "execute_result", "data": {"text/plain": ["x\ny"]}},
                           {"output_type": "display_data", "data": {"image/png": "...", "text/plain": ["<Figure>"]}}]}
    assert output_lines(printed) == 4
