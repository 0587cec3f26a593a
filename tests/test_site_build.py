"""The website's build steps without Sphinx: site/prepare.py (solutions under their exercises, widgets made
static, links) and site/check_site.py (broken links, resources from other hosts, alt text), on small notebooks
and pages made here. ``make site`` builds the real thing; tests/browser/test_site.py opens it in Chromium."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"lora_lab_site_{name}", ROOT / "site" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


prepare = _load("prepare")
check_site = _load("check_site")


def _md(text, *tags):
    return {"cell_type": "markdown", "metadata": {"tags": list(tags)} if tags else {}, "source": text}


def _code(text, *tags):
    return {"cell_type": "code", "metadata": {"tags": list(tags)} if tags else {}, "source": text,
            "outputs": [], "execution_count": None}


def _lesson():
    return {"cells": [
        _md("# 1 · A lesson"),
        _md("**Exercise 1.1.** Do it.", "exercise", "ex-1.1"),
        _code("your_answer = None", "exercise", "ex-1.1"),
        _md("**Exercise 1.2.** Think.", "exercise", "ex-1.2"),
        _md("## Takeaways"),
    ], "metadata": {}}


def _solutions():
    return {"cells": [
        _md("# Solutions"),
        _md("## Notebook 1", "solution", "ex-1.1"),  # only the solutions notebook's heading: dropped
        _md("**1.1** The answer.\n\n:::{note}\nnested\n:::", "solution", "ex-1.1"),
        _code("check(42)", "solution", "ex-1.1"),
        _md("**1.2** Thought.", "solution", "ex-1.2"),
        _md("**9.9** An exercise no lesson has.", "solution", "ex-9.9"),
        _md("untagged"),
    ], "metadata": {}}


def test_solutions_go_right_after_their_exercise_in_toggles():
    lesson = _lesson()
    inserted = prepare.insert_solutions(lesson, prepare.solution_groups(_solutions()))
    assert inserted == ["ex-1.1", "ex-1.2"]
    src = [prepare._source(c) for c in lesson["cells"]]
    # 1.1: its two cells, then the solution's markdown (in a dropdown) and code (hidden), then exercise 1.2
    assert src[2] == "your_answer = None"
    assert src[3].startswith("::::{dropdown} Solution 1.1 (part 1 of 2)") and "The answer." in src[3]
    assert "Notebook 1" not in "".join(src)
    assert src[3].rstrip().endswith("::::"), "the fence must be longer than the nested :::{note}"
    code = lesson["cells"][4]
    assert code["source"] == "check(42)" and "hide-cell" in code["metadata"]["tags"]
    assert code["metadata"]["mystnb"]["code_prompt_show"] == "Show solution 1.1 (part 2 of 2): code"
    assert src[5].startswith("**Exercise 1.2.**")
    assert src[6].startswith(":::{dropdown} Solution 1.2\n") and "Thought." in src[6]
    assert src[7] == "## Takeaways"
    assert "9.9" not in "".join(src) and "untagged" not in "".join(src)


def test_untagged_lessons_get_no_solutions():
    lesson = {"cells": [_md("**Exercise 1.1.** Do it."), _code("x = 1")], "metadata": {}}
    before = json.dumps(lesson)
    assert prepare.insert_solutions(lesson, prepare.solution_groups(_solutions())) == []
    assert json.dumps(lesson) == before


def test_widget_views_become_a_line_saying_what_the_control_does():
    nb = {"metadata": {"widgets": {"state": {}}}, "cells": [_code("rank_slider(gray, k=20);")]}
    nb["cells"][0]["outputs"] = [
        {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR", "text/plain": "fig"}},
        {"output_type": "display_data", "metadata": {},
         "data": {prepare.WIDGET_MIME: {"model_id": "x"}, "text/plain": "(interactive controls)"}},
    ]
    assert prepare.static_widgets(nb) == 1
    outs = nb["cells"][0]["outputs"]
    assert "image/png" in outs[0]["data"], "the saved default state stays"
    assert prepare.WIDGET_MIME not in outs[1]["data"] and "rank k" in outs[1]["data"]["text/html"]
    assert "widgets" not in nb["metadata"]


def test_links():
    badge = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             "(https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/01_low_rank.ipynb)")
    out = prepare.rewrite_links(badge + "\n[sol](solutions.ipynb) [faults](../docs/faults.md#x) ![p](p.png)",
                                "notebooks")
    assert "colab-badge.svg" not in out and "[Open in Colab](https://colab.research.google.com/github/" in out
    assert "[sol](solutions.ipynb)" in out, "a page of the site stays a local link"
    assert "[faults](https://github.com/lora-lab/lora-lab/blob/main/docs/faults.md#x)" in out
    assert "![p](p.png)" in out


def test_prepare_reads_the_notebooks_and_never_writes_them(tmp_path):
    conf = _load("conf")
    nbs = sorted((ROOT / "notebooks").glob("*.ipynb"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in nbs}
    summary = prepare.prepare(tmp_path / "src", conf.REFERENCES)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in nbs} == before
    assert sorted(p.name for p in (tmp_path / "src" / "notebooks").iterdir()) == [p.name for p in nbs]
    lesson2 = json.loads((tmp_path / "src" / "notebooks" / "02_lora_layer.ipynb").read_text())
    box = prepare._source(lesson2["cells"][1])
    assert "References used in this lesson" in box and "ref-hu2021" in box and "ref-kalajdzievski2023" in box
    assert summary["widgets"] >= 1


def _site(tmp_path, html):
    (tmp_path / "a.html").write_text(html)
    (tmp_path / "b.html").write_text('<h1 id="top">b</h1>')
    (tmp_path / "i.png").write_bytes(b"png")
    return check_site.check(tmp_path)


def test_check_site(tmp_path):
    ok = _site(tmp_path, '<a href="b.html#top">b</a> <a href="https://arxiv.org/abs/2106.09685">paper</a>'
                         '<img src="i.png" alt="a figure">')
    assert ok["errors"] == [] and ok["no_alt"] == [] and ok["pages"] == 2
    bad = _site(tmp_path, '<a href="c.html">c</a><a href="b.html#nope">b</a><img src="i.png">'
                          '<script src="https://cdn.example.org/x.js"></script>'
                          '<link rel="stylesheet" href="//cdn.example.org/x.css">')
    text = "\n".join(bad["errors"])
    assert "broken: c.html" in text and "#nope" in text and "cdn.example.org/x.js" in text
    assert "//cdn.example.org/x.css" in text and len(bad["errors"]) == 4
    assert bad["no_alt"] == ["a.html: i.png"]
    assert check_site.check(tmp_path, require_alt=True)["errors"][-1].startswith("image without alt text")
