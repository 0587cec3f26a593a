"""The course's cell metadata, one convention for every notebook (documented in ``lora_lab/course/student.py``):
exercise and solution tags that pair up, alt text on every figure, and slide types for the reveal.js decks."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "solutions.ipynb"
LESSONS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if p != SOLUTIONS)
EX = re.compile(r"^ex-(\d+)\.(\d+)$")
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "-", "notes"}


def cells(nb):
    return json.loads(Path(nb).read_text())["cells"]


def tags(c):
    return c.get("metadata", {}).get("tags", [])


def ids(c):
    return [t for t in tags(c) if EX.match(t)]


def src(c):
    return "".join(c["source"])


def lesson_exercises():
    return {i: nb.name for nb in LESSONS for c in cells(nb) if "exercise" in tags(c) for i in ids(c)}


def test_every_exercise_has_a_solution_and_every_solution_an_exercise():
    exercises = lesson_exercises()
    solutions = {i for c in cells(SOLUTIONS) if "solution" in tags(c) for i in ids(c)}
    assert len(exercises) >= 20
    assert sorted(set(exercises) - solutions) == [], "exercises without a solution in solutions.ipynb"
    assert sorted(solutions - set(exercises)) == [], "solutions without an exercise in the lessons"


@pytest.mark.parametrize("nb", LESSONS, ids=lambda p: p.name)
def test_exercise_cells_carry_one_id_of_their_own_notebook(nb):
    number = int(nb.name[:2])
    for c in cells(nb):
        if "exercise" in tags(c) or "solution" in tags(c):
            assert len(ids(c)) == 1, f"{nb.name}: an exercise cell needs exactly one ex-N.M tag: {tags(c)}"
            assert int(EX.match(ids(c)[0]).group(1)) == number, f"{nb.name}: {ids(c)} is another notebook's"
        else:
            assert not ids(c), f"{nb.name}: ex-N.M without 'exercise': {tags(c)}"
        # every statement is tagged with its own number, and starts its own cell
        stated = re.findall(r"(?m)^\*\*Exercise (\d+\.\d+)", src(c)) if c["cell_type"] == "markdown" else []
        assert len(stated) <= 1, f"{nb.name}: one exercise statement per cell: {stated}"
        if stated:
            assert ids(c) == [f"ex-{stated[0]}"] and "exercise" in tags(c), f"{nb.name}: Exercise {stated[0]}"


@pytest.mark.parametrize("nb", LESSONS, ids=lambda p: p.name)
def test_exercise_check_cells_are_not_compared_by_nbval(nb):
    # their saved outputs are the unanswered message of the day they were executed; nbval --nbval-lax compares
    # only cells marked NBVAL_CHECK_OUTPUT, so a new wording of that message cannot fail the notebook run
    for c in cells(nb):
        if c["cell_type"] == "code" and "exercise" in tags(c):
            assert not src(c).lstrip().startswith("# NBVAL_CHECK_OUTPUT"), f"{nb.name}: {src(c)[:80]}"


def test_solutions_notebook_cells_are_all_tagged():
    for c in cells(SOLUTIONS):
        if "solution-setup" in tags(c) or "questions" in tags(c):  # setup, and the concept questions' answers
            assert not ids(c)
        else:
            assert "solution" in tags(c) and len(ids(c)) == 1, f"untagged solutions cell: {src(c)[:80]!r}"
        if c["cell_type"] == "markdown":
            for n in re.findall(r"(?m)^\*\*(\d+\.\d+)\*\*", src(c)):
                assert ids(c) == [f"ex-{n}"], f"solution {n} is tagged {ids(c)}"


@pytest.mark.parametrize("nb", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_figure_has_alt_text(nb):
    for c in cells(nb):
        if any(k.startswith("image/") for o in c.get("outputs", []) for k in o.get("data", {})):
            alt = c["metadata"].get("mystnb", {}).get("image", {}).get("alt", "")
            assert len(alt.split()) >= 8, f"{nb.name}: a figure without alt text: {src(c)[:80]!r}"


def test_alt_text_count():
    figures = sum(1 for nb in (ROOT / "notebooks").glob("*.ipynb") for c in cells(nb)
                  if c["metadata"].get("mystnb", {}).get("image", {}).get("alt"))
    assert figures >= 28


@pytest.mark.parametrize("nb", LESSONS, ids=lambda p: p.name)
def test_every_lesson_cell_has_a_slide_type(nb):
    cs = cells(nb)
    types = [c["metadata"].get("slideshow", {}).get("slide_type") for c in cs]
    assert set(types) <= SLIDE_TYPES, f"{nb.name}: {set(types) - SLIDE_TYPES}"
    assert types[0] == "slide"
    for c, t in zip(cs, types):
        if c["cell_type"] == "markdown" and src(c).startswith("## "):
            assert t == "slide", f"{nb.name}: a section heading starts a slide: {src(c)[:60]!r}"
        if c["cell_type"] == "code" and "google.colab" in src(c):
            assert t == "skip", f"{nb.name}: the Colab install cell is skipped in the slides"
        if any("image/png" in o.get("data", {}) for o in c.get("outputs", [])):
            assert t != "skip", f"{nb.name}: a figure is skipped in the slides"
    shown = sum(t in ("slide", "subslide") for t in types)
    assert 8 <= shown <= 40, f"{nb.name}: {shown} slides for a 45-60 minute walkthrough"
