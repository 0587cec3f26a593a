"""The student edition (``make student``, :mod:`lora_lab.course.student`): the lessons without solutions or outputs,
and, slow, every lesson of it executed top to bottom in the smoke profile with its exercises unanswered."""
import json
import os
import sys
import time
import zipfile

import pytest

from lora_lab.course import student
from lora_lab.course.exercises import NOT_ANSWERED


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("edition") / "student"
    student.build(out)
    return out


def test_edition_has_every_lesson_and_no_solutions(edition):
    names = sorted(p.name for p in edition.glob("*.ipynb"))
    assert names == [p.name for p in student.lessons()] and len(names) >= 8
    assert student.SOLUTIONS not in names
    zipped = zipfile.ZipFile(edition.parent / "lora-lab-student.zip").namelist()
    assert sorted(zipped) == [f"lora-lab-student/{n}" for n in names]


@pytest.mark.parametrize("name", [p.name for p in student.lessons()])
def test_edition_notebook_has_no_solution_and_no_output(edition, name):
    nb = json.loads((edition / name).read_text())
    original = json.loads((student.NOTEBOOKS / name).read_text())
    for c in nb["cells"]:
        assert "solution" not in c["metadata"].get("tags", []), f"{name}: a solution cell is left"
        assert "execution" not in c["metadata"]
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None, f"{name}: outputs left"
    assert "widgets" not in nb["metadata"]
    text = "".join("".join(c["source"]) for c in nb["cells"])
    assert "(solutions.ipynb)" not in text, f"{name}: links to the notebook the edition leaves out"
    assert text.count("solutions.ipynb") == text.count("not in the student edition")
    # the exercises and their check cells stay, in order
    ex = lambda cells: [c["id"] for c in cells if "exercise" in c["metadata"].get("tags", [])]  # noqa: E731
    assert ex(nb["cells"]) == ex(original["cells"])
    kept = [c["id"] for c in original["cells"] if "solution" not in c["metadata"].get("tags", [])]
    assert [c["id"] for c in nb["cells"]] == kept


def test_solution_cells_in_a_lesson_are_removed(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell("**Exercise 1.1.** ?", metadata={"tags": ["exercise", "ex-1.1"]}),
                             new_code_cell("x = None", metadata={"tags": ["exercise", "ex-1.1"]}),
                             new_code_cell("x = 42", metadata={"tags": ["solution", "ex-1.1"]})])
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    src = tmp_path / "nbs"
    src.mkdir()
    nbformat.write(nb, src / "01_x.ipynb")
    nbformat.write(nb, src / student.SOLUTIONS)
    student.build(tmp_path / "out", src)
    assert [p.name for p in (tmp_path / "out").glob("*.ipynb")] == ["01_x.ipynb"]
    got = nbformat.read(tmp_path / "out" / "01_x.ipynb", as_version=4)
    assert [c.source for c in got.cells] == ["**Exercise 1.1.** ?", "x = None"] and got.cells[1].outputs == []


@pytest.mark.slow
@pytest.mark.edition
def test_student_edition_runs_top_to_bottom_in_the_smoke_profile(edition, monkeypatch):
    """Every lesson of the edition, executed as a student gets it, on the smoke profile: no error, and every
    exercise check says the exercise is not answered yet (nothing raises, nothing claims a wrong answer)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for k, v in {"LORA_LAB_PROFILE": "smoke", "LORA_LAB_PROGRESS": "0", "MPLBACKEND": "Agg",
                 "PYTHONWARNINGS": "ignore::DeprecationWarning"}.items():
        monkeypatch.setenv(k, v)
    times = {}
    for path in sorted(edition.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                resources={"metadata": {"path": str(edition)}}).execute()
        times[path.name] = time.perf_counter() - start
        checks = [c for c in nb.cells if c.cell_type == "code" and "exercise" in c.metadata.get("tags", [])]
        for c in checks:
            text = "".join(o.get("text", "") for o in c.outputs if o.get("output_type") == "stream")
            assert NOT_ANSWERED in text, f"{path.name}: an exercise check did not say {NOT_ANSWERED!r}: {text!r}"
            assert "❌" not in text, f"{path.name}: an unanswered exercise was reported wrong: {text!r}"
    sys.stderr.write("student edition, smoke profile: " + ", ".join(f"{n} {t:.0f}s" for n, t in times.items())
                     + f"; total {sum(times.values()):.0f}s; load {os.getloadavg()[0]:.2f}\n")
