"""Assemble the website's Sphinx sources in build/site-src/ from site/ and the committed notebooks.

The notebooks in notebooks/ are read, never written: every change below is made to copies.

* Each lesson gets its solutions: the cells of notebooks/solutions.ipynb tagged ``["solution", "ex-N.M"]`` go
  right after the lesson's last cell tagged ``ex-N.M`` (tag ``exercise``), each inside a toggle: a markdown cell
  in a MyST dropdown, a code cell hidden by myst-nb's ``hide-cell`` tag.
* Each lesson gets a "References used in this lesson" box (the mapping is ``REFERENCES`` in site/conf.py),
  and a link to its slides when ``make slides`` has written build/slides/<nb>.slides.html.
* The Colab badge image (loaded from colab.research.google.com) becomes a plain link; the theme's launch
  button opens the same notebook in Colab.
* A widget's live view cannot run on a static page: its output becomes one line saying what the control does;
  the figure or table of its default state, saved just above it, stays.
* Links to repository files that are not pages of the site (``../lora_lab/lora/conv.py``, ``docs/faults.md``)
  point to the file on GitHub.

The folder mirrors the repository (pages at its root, notebooks in notebooks/), so the launch buttons' paths
and TEACHING.md's relative links are the repository's. Files are only rewritten when their content changes,
so Sphinx rebuilds only what changed.
"""
from __future__ import annotations

import copy
import json
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "site"
REPO_URL = "https://github.com/lora-lab/lora-lab"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
EX_TAG = re.compile(r"^ex-(\d+)\.(\d+)$")
BADGE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]\(([^)]+)\)")

# What each widget does when the notebook runs live (keyed by the function the cell calls).
WIDGETS = {
    "spectrum_slider": "two sliders choose how fast the spectrum decays and the rank k kept; both plots and the "
                       "error line are redrawn",
    "rank_slider": "a slider chooses the rank k; the photo is redrawn at its best rank-k approximation, with its "
                   "error, the Eckart–Young bound and the numbers stored",
    "scaling_explorer": "you choose the rank, the scaling rule, the init of A and α; one Adam step runs live and the "
                        "size of the first update ‖ΔW‖ is marked on the three rules' curves",
    "lora_calculator": "you choose the model, the rank, which layers get LoRA, α and the scaling rule; the parameter "
                       "counts, adapter file size and AdamW memory are recomputed",
    "message_playground": "you type a message and choose an adapter (or none, merged or not); the prediction, its "
                          "probability and the latency are shown",
    "live_training": "the curves grow while the model trains, and a Stop button ends training after the current "
                     "batch, keeping the history",
}


def _source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_key(cell) -> str | None:
    """``"ex-N.M"`` when the cell carries such a tag, else None."""
    found = [t for t in _tags(cell) if EX_TAG.match(t)]
    return found[0] if found else None


def solution_groups(solutions: dict) -> dict[str, list[dict]]:
    """The cells of the solutions notebook tagged ``solution`` and ``ex-N.M``, grouped by ``ex-N.M`` in order."""
    groups: dict[str, list[dict]] = {}
    for cell in solutions["cells"]:
        key = exercise_key(cell)
        if key and "solution" in _tags(cell):
            groups.setdefault(key, []).append(cell)
    return groups


def _fence(text: str) -> str:
    """A colon fence longer than any colon run in the text, so the text's own directives nest inside it."""
    longest = max((len(m) for m in re.findall(r"^\s*(:{3,})", text, flags=re.M)), default=2)
    return ":" * max(3, longest + 1)


def _strip_headings(text: str) -> str:
    """The solutions notebook's own headings ("## Notebook 2") mean nothing under the exercise."""
    return re.sub(r"^#{1,6} +(Notebook \d+|Solutions?\b).*\n?", "", text, flags=re.M).strip("\n")


def toggled(cell: dict, key: str, part: int, parts: int) -> dict:
    """A copy of a solution cell, hidden behind a toggle on the page."""
    cell = copy.deepcopy(cell)
    number = key[3:]
    label = f"Solution {number}" + (f" (part {part} of {parts})" if parts > 1 else "")
    cell.setdefault("metadata", {})
    if cell["cell_type"] == "markdown":
        body = _strip_headings(_source(cell))
        fence = _fence(body)
        cell["source"] = f"{fence}{{dropdown}} {label}\n:class-container: solution\n\n{body}\n{fence}\n"
    elif cell["cell_type"] == "code":
        tags = [t for t in _tags(cell) if t not in ("hide-input", "hide-output", "remove-cell")]
        cell["metadata"]["tags"] = tags + ["hide-cell"]
        mystnb = cell["metadata"].setdefault("mystnb", {})
        mystnb["code_prompt_show"] = f"Show {label.lower()}: code"
        mystnb["code_prompt_hide"] = f"Hide {label.lower()}: code"
    if "id" in cell:
        cell["id"] = f"sol-{cell['id']}"[:64]
    return cell


def insert_solutions(lesson: dict, groups: dict[str, list[dict]]) -> list[str]:
    """Put each exercise's solution cells right after the lesson's last cell of that exercise.

    Returns the ``ex-N.M`` keys inserted, in order. A lesson without tagged exercise cells is left as it is.
    """
    last: dict[str, int] = {}
    for i, cell in enumerate(lesson["cells"]):
        key = exercise_key(cell)
        if key and "exercise" in _tags(cell):
            last[key] = i
    inserted = []
    for key, index in sorted(last.items(), key=lambda kv: kv[1], reverse=True):
        cells = [c for c in groups.get(key, [])
                 if c["cell_type"] != "markdown" or _strip_headings(_source(c)).strip()]
        if not cells:
            continue
        new = [toggled(c, key, n + 1, len(cells)) for n, c in enumerate(cells)]
        lesson["cells"][index + 1:index + 1] = new
        inserted.append(key)
    return sorted(inserted, key=lambda k: tuple(int(x) for x in EX_TAG.match(k).groups()))


def _widget_note(cell) -> str:
    src = _source(cell)
    what = next((text for name, text in WIDGETS.items() if re.search(rf"\b{name}\s*\(", src)), None)
    live = f"run live, {what}" if what else "run live, its controls can be moved"
    return (f'<p class="widget-note"><strong>Interactive in JupyterLab or Colab:</strong> this cell shows '
            f"controls there; {live}. This page shows the default state, saved above.</p>")


def static_widgets(nb: dict) -> int:
    """Replace every widget view output by a line saying what the live control does. Returns how many."""
    count = 0
    for cell in nb["cells"]:
        outs = cell.get("outputs", [])
        for i, out in enumerate(outs):
            if WIDGET_MIME in out.get("data", {}):
                outs[i] = {"output_type": "display_data", "metadata": {},
                           "data": {"text/html": _widget_note(cell), "text/plain": "(interactive controls)"}}
                count += 1
    nb.get("metadata", {}).pop("widgets", None)
    return count


def _site_pages() -> set[str]:
    return {p.name for p in SITE.glob("*.md")}


def rewrite_links(md: str, page_dir: str) -> str:
    """Colab badge image -> a text link; relative links to repository files outside the site -> GitHub."""
    md = BADGE.sub(lambda m: f"[Open in Colab]({m.group(1)})", md)

    def fix(m):
        text, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return m.group(0)
        path, _, frag = target.partition("#")
        repo_path = Path(page_dir, path)
        parts = []
        for part in repo_path.parts:  # normalise without touching the file system
            if part == "..":
                if parts:
                    parts.pop()
            elif part != ".":
                parts.append(part)
        rel = "/".join(parts)
        in_site = (rel.startswith("notebooks/") and rel.endswith(".ipynb")) or rel in _site_pages()
        if in_site or not (ROOT / rel).exists():
            return m.group(0)
        kind = "tree" if (ROOT / rel).is_dir() else "blob"
        return f"[{text}]({REPO_URL}/{kind}/main/{rel}{'#' + frag if frag else ''})"

    return re.sub(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)", fix, md)


def references_cell(nb: dict, references: dict, slides: str | None, also: tuple = ()) -> dict | None:
    """A markdown cell listing the references the lesson's text cites (matched by each reference's pattern),
    and those in ``also`` (what it uses without naming it, e.g. the data set)."""
    text = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    used = [(key, ref) for key, ref in references.items() if key in also or re.search(ref["pattern"], text)]
    lines = []
    for key, ref in used:
        lines.append(f"- {{ref}}`{ref['short']} <ref-{key}>`: [{ref['link_text']}]({ref['url']})")
    if slides:
        lines.append(f'- Slides for this lesson: <a href="{slides}">{Path(slides).name}</a>')
    if not lines:
        return None
    body = "\n".join(lines)
    return {"cell_type": "markdown", "metadata": {}, "id": "site-references",
            "source": ":::{admonition} References used in this lesson\n:class: seealso lesson-references\n\n"
                      f"{body}\n:::\n"}


def _write(path: Path, content: str | bytes) -> bool:
    """Write only when the content differs (keeps Sphinx's incremental build incremental)."""
    data = content.encode() if isinstance(content, str) else content
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def lesson_notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def prepare(out: Path, references: dict, slides_dir: Path | None = None, student: Path | None = None,
            lesson_references: dict | None = None) -> dict:
    """Write the Sphinx source folder ``out``; returns a summary of what was done."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {"solutions": {}, "widgets": 0, "slides": [], "student": None, "teaching": False}
    extra = out.parent / (out.name + "-extra")  # html_extra_path: copied as is into the built site
    extra.mkdir(parents=True, exist_ok=True)
    expected = set()

    solutions_nb = json.loads((ROOT / "notebooks" / "solutions.ipynb").read_text())
    groups = solution_groups(solutions_nb)
    for path in lesson_notebooks() + [ROOT / "notebooks" / "solutions.ipynb"]:
        nb = json.loads(path.read_text())
        if path.name != "solutions.ipynb":
            summary["solutions"][path.stem] = insert_solutions(nb, groups)
        summary["widgets"] += static_widgets(nb)
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = rewrite_links(_source(cell), "notebooks")
        slides = None
        deck = (slides_dir / f"{path.stem}.slides.html") if slides_dir else None
        if deck and deck.is_file():
            slides = f"../slides/{deck.name}"
            summary["slides"].append(deck.name)
        box = references_cell(nb, references, slides, tuple((lesson_references or {}).get(path.stem, ())))
        if box is not None:
            nb["cells"].insert(1, box)
        _write(out / "notebooks" / path.name, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        expected.add(Path("notebooks") / path.name)

    if summary["slides"]:  # the decks with what they load (reveal.js, MathJax), as make slides wrote them
        for f in sorted(slides_dir.rglob("*")):
            if f.is_file():
                _write(extra / "slides" / f.relative_to(slides_dir), f.read_bytes())
                expected.add(Path("slides") / f.relative_to(slides_dir))

    for page in SITE.glob("*.md"):
        if page.name == "teaching.md" and not (ROOT / "TEACHING.md").is_file():
            continue  # the teacher's guide is not written yet: no page rather than a placeholder
        text = page.read_text()
        if page.name == "index.md" and not (ROOT / "TEACHING.md").is_file():
            text = re.sub(r"^teaching\n", "", text, flags=re.M)  # its toctree entry goes with the page
        _write(out / page.name, text)
        expected.add(Path(page.name))
    if (ROOT / "TEACHING.md").is_file():
        _write(out / "_include" / "TEACHING.md", rewrite_links((ROOT / "TEACHING.md").read_text(), "."))
        expected.add(Path("_include") / "TEACHING.md")
        summary["teaching"] = True

    if student is not None:
        zip_src = student.parent / "lora-lab-student.zip"
        target = extra / "downloads" / "lora-lab-student.zip"
        if zip_src.is_file():
            _write(target, zip_src.read_bytes())
            summary["student"] = str(zip_src)
        elif student.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(student.rglob("*")):
                    if f.is_file():
                        z.write(f, Path("lora-lab-student") / f.relative_to(student))
            summary["student"] = str(student)
        if summary["student"]:
            expected.add(Path("downloads") / "lora-lab-student.zip")

    # files left over from an earlier build (a deck or a page that is gone) must not survive
    for folder in (out, extra):
        for f in sorted(folder.rglob("*"), reverse=True):
            rel = f.relative_to(folder)
            if f.is_file() and rel not in expected:
                f.unlink()
            elif f.is_dir() and not any(f.iterdir()):
                f.rmdir()
    (out / "_site_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":  # pragma: no cover - used by site/build.py
    import sys

    sys.path.insert(0, str(SITE))
    import conf  # noqa: E402

    print(json.dumps(prepare(ROOT / "build" / "site-src", conf.REFERENCES, ROOT / "build" / "slides",
                             ROOT / "build" / "student", conf.LESSON_REFERENCES), indent=1))
