"""A results file that grows one run at a time: the way the resumable experiments (the claims, the bf16 quality
check) keep what they measured. Long sweeps get stopped (a laptop lid, a lost Colab runtime), so the file is rewritten
atomically after every run, a second launch skips the runs already there, and each launch is recorded (its
command, commit, machine and start time) so a file made over several sittings says so.
"""
from __future__ import annotations

import platform
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from ..utils.files import read_json_file, write_json
from ..utils.machine import git_commit, machine

__all__ = ["ResultsFile", "ResultsFileError", "read_results", "exit_on_results_error", "now"]


def now() -> str:
    """The time in UTC, to the minute, as results files write it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class ResultsFileError(ValueError):
    """A results file cannot be read or resumed (corrupt, truncated, foreign, made with other settings); the message
    names the file. Nothing was written to it."""


@contextmanager
def exit_on_results_error(prefix: str = "error"):
    """In a command's ``main``: a :class:`ResultsFileError` ends the command with its one-line message (the file is
    named and was left as it was) instead of a traceback."""
    try:
        yield
    except ResultsFileError as e:
        raise SystemExit(f"{prefix}: {e}") from None


_FIX = ("It was left as it was: move it away (or pass another --out) to start a new file, or restore it from a "
        "backup or git.")


def read_results(path, rows: str | None = None) -> dict:
    """A results file's contents, checked to be a JSON object (with a list ``rows`` when given); a corrupt,
    truncated or foreign file is a :class:`ResultsFileError` naming it (nothing is written: it is never
    overwritten)."""
    path = Path(path)
    try:
        data = read_json_file(path, None, fix=_FIX, expect=dict)
    except (OSError, ValueError) as e:
        raise ResultsFileError(str(e)) from None
    if rows is not None and not isinstance(data.get(rows), list):
        raise ResultsFileError(f"{path} is not a results file of this kind: it has no list {rows!r} "
                               f"(its keys: {sorted(data)[:8]}). {_FIX}")
    if rows is not None and not all(isinstance(r, dict) for r in data[rows]):
        raise ResultsFileError(f"{path}: its {rows!r} should hold one JSON object per run; some are not. {_FIX}")
    return data


class ResultsFile:
    """``data``: the file's contents (a dict); ``data[rows]``: one dict per run, each identified by ``key(row)``.

    ``header`` starts a new file (the rows list is added); an existing file is read instead, and ``check(data)``
    (if given) may raise when it was made with settings the new runs would not be comparable with.
    """

    def __init__(self, path, header: dict, *, rows: str = "runs", key: Callable[[dict], object],
                 check: Callable[[dict], None] | None = None, indent: int = 2):
        self.path, self.rows, self.key, self.indent = Path(path), rows, key, indent
        if self.path.exists() or self.path.is_symlink():
            self.data = read_results(self.path, rows)
            if check is not None:
                try:
                    check(self.data)
                except (KeyError, TypeError) as e:  # a field the check reads is missing or of another type
                    raise ResultsFileError(f"{self.path} lacks or garbles {e} for this kind of results file: it "
                                           f"was edited or is another kind of file. {_FIX}") from None
                except ValueError as e:  # made with other settings: the check's message says which
                    raise ResultsFileError(str(e)) from None
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
