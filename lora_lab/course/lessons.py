"""The course's lessons, and what each costs to read and to run: one home for the teacher's guide and the card
that opens every notebook.

    python -m lora_lab.lessons times      # measure run times, write benchmarks/lesson-times.json (6 min here)
    python -m lora_lab.lessons table      # TEACHING.md's table, from that file and the notebooks
    python -m lora_lab.lessons table --write TEACHING.md   # put it there (between its two markers)

Why a card: a class loses its first ten minutes to "which model is this running, and how long will it take?".
:func:`lesson_card` answers both in the notebook's first cell, from numbers that were measured, each with the
machine it was measured on. It reads the profile the way the notebooks do
(:func:`lora_lab.experiments.profiles.get_settings`)
and the times from the committed ``benchmarks/lesson-times.json``, found the way the notebooks find committed
benchmark files (the checkout's ``benchmarks/``, else the copy shipped as ``lora_lab.benchmarks``, e.g. on Colab).

Where the times come from (nothing is estimated):

* ``offline``: the committed notebooks' own execution metadata (``make execute`` saves it): the sum over code
  cells of ``shell.execute_reply - iopub.execute_input``, and the first-to-last wall time; the machine is the one
  the notebook printed (its ``machine()`` line).
* ``smoke``: each notebook executed here with nbclient in the smoke profile (nothing saved), timed from kernel
  start to the last reply, with the machine, the commit and the 1-minute load average before and after.
* ``real`` (GPT-2 124M on a GPU): never run for these notebooks, so "not measured".
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..experiments.profiles import PROFILES, get_settings
from ..experiments.results import now
from ..utils.files import write_json
from ..utils.machine import checkout_root, committed_file, git_commit, machine

__all__ = ["Lesson", "LESSONS", "lesson", "lesson_card", "lesson_times", "markdown_words", "reading_minutes",
           "offline_times", "smoke_time", "times_table"]

REPO = checkout_root() or Path.cwd()  # the notebooks are read from a checkout; the card needs none
NOTEBOOKS = REPO / "notebooks"
TIMES_FILE = "lesson-times.json"  # no "results" key: lora_lab.experiments.bench.committed_results() must skip it
WORDS_PER_MINUTE = 200
SWITCH = "%env LORA_LAB_PROFILE=offline"


@dataclass(frozen=True)
class Lesson:
    name: str  # the notebook's file name without .ipynb
    number: int | None  # None: the solutions
    title: str  # the notebook's heading, without its number

    @property
    def file(self) -> str:
        return f"{self.name}.ipynb"


LESSONS = (
    Lesson("01_low_rank", 1, "Low-rank matrices: the algebra behind LoRA"),
    Lesson("02_lora_layer", 2, "The LoRA layer, its scaling, and what it costs"),
    Lesson("03_gpt2_and_data", 3, "GPT-2, an encoder, and the SMS-spam data"),
    Lesson("04_lora_finetuning", 4, "Fine-tuning with LoRA"),
    Lesson("05_full_vs_lora", 5, "Full fine-tuning vs LoRA"),
    Lesson("06_adapters", 6, "Adapters in practice: two tasks, one base, switch, merge"),
    Lesson("07_serving_adapters", 7, "Adapters at scale: many GPUs, many adapters, other tools"),
    Lesson("08_rank_and_alpha", 8, "Choosing the rank and α"),
    Lesson("09_vision", 9, "LoRA beyond text: convolutions and images"),
    Lesson("10_claims", 10, "Putting the claims to the test"),
    Lesson("solutions", None, "Solutions to the exercises"),
)


def lesson(key) -> Lesson:
    """A lesson by file name (with or without ``.ipynb``), by number, or itself."""
    if isinstance(key, Lesson):
        return key
    for les in LESSONS:
        if key in (les.name, les.file, les.number, str(les.number), f"{les.number:02d}" if les.number else None):
            return les
    raise KeyError(f"no lesson {key!r}; the lessons are {[les.name for les in LESSONS]}")


# --- reading time ------------------------------------------------------------------------------------------
_LINK_TARGET = re.compile(r"\]\([^)]*\)")  # a link's or image's address is not read
_WORD = re.compile(r"[^\W_](?:[\w'’.\-]*\w)?")  # letters/digits, with inner apostrophes, dots, hyphens


def markdown_words(nb: dict) -> int:
    """Words in a notebook's markdown cells (link addresses left out; formulas and code spans count as
    their words, since a reader reads them too)."""
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return len(_WORD.findall(_LINK_TARGET.sub("]", text)))


def reading_minutes(words: int, wpm: int = WORDS_PER_MINUTE) -> int:
    """Whole minutes, rounded up, at ``wpm`` words a minute (200: careful reading of technical text)."""
    return max(1, math.ceil(words / wpm))


def _load(les: Lesson) -> dict:
    return json.loads((NOTEBOOKS / les.file).read_text(encoding="utf-8"))


# --- the times ---------------------------------------------------------------------------------------------
def lesson_times() -> dict:
    """The committed ``lesson-times.json`` ({} when there is none)."""
    f = committed_file(TIMES_FILE)
    return json.loads(f.read_text(encoding="utf-8")) if f else {}


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def _time_text(times: dict, les: Lesson, profile: str) -> str:
    """One profile's run time of a lesson, with the machine it was measured on, or why there is none."""
    entry = times.get("lessons", {}).get(les.name, {}).get(profile)
    if not entry:
        return "not measured"
    where = times.get("profiles", {}).get(profile, {}).get("machine") or entry.get("machine", "")
    where = re.sub(r"^(CPU|GPU): ", "", where).replace("(R)", "").split(", torch")[0]
    if "load1_before" in entry:  # measured on a shared machine: say how busy it was
        where += f"; load {entry['load1_before']:.1f}"
    return f"{_fmt_s(entry['wall_s'])} ({where})"


def lesson_card(key, profile: str | None = None) -> None:
    """Print, in at most 6 lines, the active profile, how to switch it, and this lesson's measured run times.
    The profile is read as every notebook reads it (``LORA_LAB_PROFILE``, default ``real``)."""

    les, times = lesson(key), lesson_times()
    settings = get_settings(profile, quiet=True)
    active = settings.profile
    head = f"Lesson {les.number} · {les.title}" if les.number else les.title
    quick = f"  |  QUICK: {settings.subset} messages per class, {settings.epochs} epoch" if settings.quick else ""
    print(f"{head}  |  profile: {active}{quick}")
    print(f"To switch, run {SWITCH} (or real / smoke) before the imports; restart the kernel if they ran. "
          "A slow machine: %env LORA_LAB_QUICK=1 trains a small subset for one epoch.")
    print("Measured run time, whole notebook:")
    for p in PROFILES:
        print(f"  {'→' if p == active else ' '} {p:<7} {_time_text(times, les, p)}")


# --- measuring ---------------------------------------------------------------------------------------------
def _stamp(s: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _machine_line(nb: dict) -> str | None:
    """The machine a notebook printed (``machine()``'s ``CPU: ...`` / ``GPU: ...`` line), if it did."""
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            text = o.get("text") if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain")
            m = re.search(r"^((?:CPU|GPU): [^|\n]*)", "".join(text or ""), re.M)
            if m:
                return m.group(1).strip()
    return None


def offline_times(nb: dict) -> dict:
    """A committed (offline-profile) notebook's run time from its own cell execution metadata."""
    cells_s, first, last, n = 0.0, None, None, 0
    for c in nb["cells"]:
        ex = c.get("metadata", {}).get("execution", {})
        if c["cell_type"] != "code" or "iopub.execute_input" not in ex or "shell.execute_reply" not in ex:
            continue
        start, end = _stamp(ex["iopub.execute_input"]), _stamp(ex["shell.execute_reply"])
        cells_s += (end - start).total_seconds()
        first, last, n = first or start, end, n + 1
    if not n:
        return {}
    return {"wall_s": round((last - first).total_seconds(), 1), "cells_s": round(cells_s, 1), "code_cells": n,
            "executed": first.strftime("%Y-%m-%d %H:%M UTC"), "machine": _machine_line(nb)}


SMOKE_ENV = {"LORA_LAB_PROFILE": "smoke", "LORA_LAB_PROGRESS": "0", "MPLBACKEND": "Agg",
             "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}


def smoke_time(les: Lesson, env: dict | None = None, timeout: int = 900) -> dict:
    """Execute a notebook with nbclient in the smoke profile (the copy in memory only: nothing is saved) and
    time it, kernel start included. ``OMP_WAIT_POLICY=PASSIVE`` as in the tests (``tests/conftest.py``)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / les.file, as_version=4)
    saved = dict(os.environ)
    os.environ.update({**SMOKE_ENV, **(env or {})})
    try:
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()[0]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"wall_s": round(wall, 1), "cells_s": offline_times(nb).get("cells_s"), "load1_before": round(load0, 2),
            "load1_after": round(load1, 2)}


def measure(profiles=("offline", "smoke"), only=None, out: Path | None = None, log=print) -> dict:
    """Measure the asked profiles and merge them into ``benchmarks/lesson-times.json`` (the other profiles'
    entries are kept), written atomically."""
    import torch

    out = out or REPO / "benchmarks" / TIMES_FILE
    data = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    data["about"] = ("Run time of each notebook, whole, per profile: measured, never estimated. "
                     "Written by python -m lora_lab.lessons times; read by lora_lab.course.lessons.lesson_card.")
    profs = data.setdefault("profiles", {})
    profs["real"] = {"how": "not measured: GPT-2 124M on a GPU has never been run for these notebooks here"}
    lessons = data.setdefault("lessons", {})
    chosen = [lesson(k) for k in only] if only else list(LESSONS)
    if "offline" in profiles:
        profs["offline"] = {"how": "from each committed notebook's own execution metadata (make execute, "
                                   "jupyter nbconvert --execute): wall_s is first cell start to last reply, cells_s "
                                   "the sum over code cells of shell.execute_reply - iopub.execute_input; the "
                                   "machine is the one the notebook printed"}
        for les in chosen:
            lessons.setdefault(les.name, {})["offline"] = t = offline_times(_load(les))
            log(f"offline {les.name}: {t.get('wall_s')} s ({t.get('machine')})")
    if "smoke" in profiles:
        profs["smoke"] = {
            "how": "each notebook executed with nbclient (nothing saved), wall_s from kernel start to the last "
                   "reply; cells_s the sum of its cells' execution times; env " + " ".join(
                       f"{k}={v}" for k, v in SMOKE_ENV.items()),
            "machine": machine(), "torch": torch.__version__, "commit": git_commit() or "unknown",
            "started": now(),
            "note": "the 1-minute load average "
                    "before and after each notebook says how busy it was (above the core count, processes waited "
                    "for a core, and these times are longer than on an idle machine)"}
        for les in chosen:
            lessons.setdefault(les.name, {})["smoke"] = t = smoke_time(les)
            log(f"smoke {les.name}: {t['wall_s']} s (load {t['load1_before']} -> {t['load1_after']})")
    data["lessons"] = {les.name: lessons[les.name] for les in LESSONS if les.name in lessons}
    write_json(out, data)
    return data


# --- the teacher's table -----------------------------------------------------------------------------------
# the table's first and last lines mark it in TEACHING.md (plain markdown: the course website includes the file
# with MyST, so no HTML comments as markers)
TABLE_BEGIN = "| lesson | words (markdown) | reading at 200 wpm |"
TABLE_END = "Real (GPT-2 124M on a GPU): not measured."


def times_table(times: dict | None = None) -> str:
    """The markdown table of TEACHING.md: per lesson, reading time and run time per profile."""
    times = lesson_times() if times is None else times
    sm = times.get("profiles", {}).get("smoke", {})
    rows = [TABLE_BEGIN + " offline: first cell to last (sum of cells) | smoke: kernel start to last cell, "
            "load before→after | real |", "|---|---:|---:|---:|---:|---|"]
    for les in LESSONS:
        words = markdown_words(_load(les))
        e = times.get("lessons", {}).get(les.name, {})
        off, smk = e.get("offline"), e.get("smoke")
        off_s = f"{_fmt_s(off['wall_s'])} ({_fmt_s(off['cells_s'])})" if off else "not measured"
        smk_s = (f"{_fmt_s(smk['wall_s'])}, {smk['load1_before']:.2f}→{smk['load1_after']:.2f}" if smk
                 else "not measured")
        name = f"{les.number} · {les.title}" if les.number else les.title
        rows.append(f"| [{name}](notebooks/{les.file}) | {words:,} | {reading_minutes(words)} min | {off_s} | "
                    f"{smk_s} | not measured |")
    where = {}  # machine -> the lessons executed on it (lessons are re-executed one at a time, so they may differ)
    for les in LESSONS:
        m = times.get("lessons", {}).get(les.name, {}).get("offline", {}).get("machine")
        if m:
            where.setdefault(m, []).append(str(les.number) if les.number else "the solutions")
    on = "; ".join(f"{m} ({'lesson' if len(ls) == 1 else 'lessons'} {', '.join(ls)})" if len(where) > 1 else m
                   for m, ls in where.items())
    foot = (f"\nOffline: from the committed notebooks' execution metadata, on {on or 'unknown'}. "
            f"Smoke: executed with nbclient on {sm.get('machine', 'unknown')}, at commit {sm.get('commit', '?')}, "
            f"started {sm.get('started', '?')}, with the 1-minute load average before and after each "
            "(above the core count, other work shared the cores). "
            + TABLE_END)
    return "\n".join([*rows, foot])


def write_table(path: Path) -> bool:
    """Replace the table between the markers in ``path``; True when it changed."""
    text = path.read_text(encoding="utf-8")
    i, j = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
    new = text[:i] + times_table() + text[j:]
    path.write_text(new, encoding="utf-8")
    return new != text


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lora_lab.lessons", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("times", help="measure and write benchmarks/lesson-times.json")
    t.add_argument("--profiles", default="offline,smoke", help="comma-separated: offline, smoke")
    t.add_argument("--only", nargs="*", help="lessons to measure (names or numbers); default all")
    t.add_argument("--out", type=Path, default=None)
    tb = sub.add_parser("table", help="print TEACHING.md's run-time table")
    tb.add_argument("--write", type=Path, default=None, help="replace the table in this file")
    c = sub.add_parser("card", help="print a lesson's card")
    c.add_argument("lesson")
    args = ap.parse_args(argv)
    if args.command == "times":
        measure(tuple(args.profiles.split(",")), args.only, args.out)
    elif args.command == "table":
        if args.write:
            print(f"{args.write}: {'updated' if write_table(args.write) else 'already in sync'}")
        else:
            print(times_table())
    else:
        lesson_card(args.lesson)
    return 0


if __name__ == "__main__":
    sys.exit(main())
