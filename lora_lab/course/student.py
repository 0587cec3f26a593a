"""The student edition of the course: ``python -m lora_lab.student build/student`` (``make student``).

It writes every lesson notebook with its outputs cleared and execution counts reset, the cells tagged
``solution`` removed, and ``solutions.ipynb`` left out; the exercises and their check cells stay. Next to the
folder it writes a zip of it (``build/lora-lab-student.zip`` for ``build/student``). An exercise left as given
prints "not answered yet" (``lora_lab.course.exercises``), so the edition runs top to bottom
(``tests/test_student_edition.py`` executes it in the smoke profile).

Cell tags, one convention for the whole course (``tests/test_course_tags.py`` checks it):

* in a lesson, every cell of exercise N.M (its markdown statement and its check cells) is tagged
  ``exercise`` and ``ex-N.M``; a worked solution inside a lesson would be tagged ``solution`` and ``ex-N.M``
  (the lessons have none today) and is removed from the student edition;
* in ``solutions.ipynb`` every cell of the solution to N.M is tagged ``solution`` and ``ex-N.M``; its title,
  install and import cells ``solution-setup``; its answers to the concept questions
  (:mod:`lora_lab.course.questions`) ``questions``;
* every exercise in the lessons has a solution with the same id, and every solution an exercise;
* other tags stay as they are (``nbval-skip``: the Colab install cell; ``slides-hide-input``: the slides show
  that cell's output without its code, see ``lora_lab.slides``).
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

from ..utils.machine import checkout_root

NOTEBOOKS = (checkout_root() or Path.cwd()) / "notebooks"  # the edition is made from a checkout
SOLUTIONS = "solutions.ipynb"
EXERCISE_TAG = re.compile(r"^ex-\d+\.\d+$")
_SOLUTIONS_LINK = re.compile(r"\[([^\]]*)\]\(solutions\.ipynb\)")
_NOT_HERE = f"`{SOLUTIONS}` (your teacher has it; it is not in the student edition)"


def lessons(notebooks: Path = NOTEBOOKS) -> list[Path]:
    """The lesson notebooks, in course order (``solutions.ipynb`` is not a lesson)."""
    return sorted(p for p in Path(notebooks).glob("*.ipynb") if p.name != SOLUTIONS)


def exercise_ids(cells, kind: str) -> set[str]:
    """The ``ex-N.M`` ids of the cells tagged ``kind`` (``exercise`` or ``solution``)."""
    return {t for c in cells for t in c.get("metadata", {}).get("tags", [])
            if kind in c.get("metadata", {}).get("tags", []) and EXERCISE_TAG.match(t)}


def student_notebook(nb):
    """``nb`` (an nbformat notebook) as a student gets it: no solution cells, no outputs, no counts, no
    execution timings or saved widget state, and no link to ``solutions.ipynb``."""
    nb.cells = [c for c in nb.cells if "solution" not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        c.metadata.pop("execution", None)
        if c.cell_type == "markdown" and SOLUTIONS in c.source:  # no link to a notebook the edition leaves out
            c.source = _SOLUTIONS_LINK.sub(r"\1", c.source).replace(f"`{SOLUTIONS}`", _NOT_HERE)
        if c.cell_type == "code":
            c.outputs = []
            c.execution_count = None
    nb.metadata.pop("widgets", None)
    return nb


def _zip(folder: Path, archive: Path) -> None:
    """A zip of ``folder`` with the archive's name as its top directory (``lora-lab-student/``), and fixed
    timestamps so that the same notebooks give the same bytes."""
    tmp = archive.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                info = zipfile.ZipInfo(str(Path(archive.stem) / p.relative_to(folder)), date_time=(2026, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                z.writestr(info, p.read_bytes())
    tmp.replace(archive)


def build(out: Path, notebooks: Path = NOTEBOOKS, archive: Path | None = None) -> list[Path]:
    """Write the student edition of ``notebooks`` into ``out`` (emptied of old notebooks first) and its zip
    (default: ``out`` + ``.zip`` named ``lora-lab-student.zip`` beside it). Returns the notebooks written."""
    import nbformat

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ipynb"):
        old.unlink()
    written = []
    for src in lessons(notebooks):
        nb = student_notebook(nbformat.read(src, as_version=4))
        nbformat.validate(nb)
        dest = out / src.name
        nbformat.write(nb, dest)
        written.append(dest)
    archive = Path(archive) if archive else out.parent / "lora-lab-student.zip"
    _zip(out, archive)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lora_lab.student", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="build/student", help="folder to write (default build/student)")
    ap.add_argument("--notebooks", default=str(NOTEBOOKS), help="the course's notebooks folder")
    ap.add_argument("--zip", default=None, help="the zip to write (default: lora-lab-student.zip beside OUT)")
    args = ap.parse_args(argv)
    written = build(Path(args.out), Path(args.notebooks), Path(args.zip) if args.zip else None)
    archive = Path(args.zip) if args.zip else Path(args.out).parent / "lora-lab-student.zip"
    print(f"student edition: {len(written)} notebooks in {args.out}, zipped to {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
