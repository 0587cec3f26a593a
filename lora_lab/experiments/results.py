"""A results file that grows one run at a time: the way the resumable experiments (the claims, the bf16 quality
check) keep what they measured. Long sweeps get stopped (a laptop lid, a lost Colab runtime), so the file is rewritten
atomically after every run, a second launch skips the runs already there, and each launch is recorded (its
command, commit, machine and start time) so a file made over several sittings says so.
"""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from ..utils.files import write_json
from ..utils.machine import git_commit, machine

__all__ = ["ResultsFile", "now"]


def now() -> str:
    """The time in UTC, to the minute, as results files write it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class ResultsFile:
    """``data``: the file's contents (a dict); ``data[rows]``: one dict per run, each identified by ``key(row)``.

    ``header`` starts a new file (the rows list is added); an existing file is read instead, and ``check(data)``
    (if given) may raise when it was made with settings the new runs would not be comparable with.
    """

    def __init__(self, path, header: dict, *, rows: str = "runs", key: Callable[[dict], object],
                 check: Callable[[dict], None] | None = None, indent: int = 2):
        self.path, self.rows, self.key, self.indent = Path(path), rows, key, indent
        if self.path.is_file():
            self.data = json.loads(self.path.read_text())
            if check is not None:
                check(self.data)
        else:
            self.data = {**header, rows: []}

    def done(self) -> set:
        """The keys of the runs already in the file."""
        return {self.key(r) for r in self.data[self.rows]}

    def add(self, row: dict) -> None:
        """Append one run and rewrite the file (atomically: a reader never sees half of it)."""
        self.data[self.rows].append(row)
        self.save()

    def record_launch(self, command: str, device="cpu") -> None:
        """Note this launch in ``data["launches"]``: what ran, from which commit, on what machine, and when."""
        self.data.setdefault("launches", []).append({
            "command": command, "commit": git_commit() or "unknown", "machine": machine(device),
            "torch": torch.__version__, "python": platform.python_version(), "started": now()})
        self.save()

    def save(self) -> None:
        self.data["updated"] = now()
        write_json(self.path, self.data, indent=self.indent)
