"""Every ``LORA_LAB_*`` environment variable the package reads, in one place: what each one does, and the one
function that reads it. Library code asks these functions and never ``os.environ`` (tests/test_layers.py
checks), so a variable is documented, spelled and parsed once. ``LORA_LAB_THREADS`` is the exception that
proves the rule: :func:`lora_lab.utils.threads.configure` must read it before anything imports torch, from an
environment it is given.
"""
from __future__ import annotations

import os

from .files import folder_problem

__all__ = ["VARIABLES", "get", "profile", "progress", "widgets", "device", "precision", "cpu_bf16", "data_dir",
           "commit", "run_all", "quick"]

VARIABLES = {
    "LORA_LAB_PROFILE": "real | offline | smoke: which backbone the notebooks use (default: real)",
    "LORA_LAB_PROGRESS": "0 turns progress bars and live training views off (they are off under CI too)",
    "LORA_LAB_WIDGETS": "1 or 0 overrides the guess whether someone watches a live notebook",
    "LORA_LAB_DEVICE": "cpu, cuda or mps: the device when the code asks for none",
    "LORA_LAB_PRECISION": "auto | fp32 | bf16 | fp16: replaces auto for every run",
    "LORA_LAB_CPU_BF16": "0 or 1 skips the CPU's bf16 probe (1 still needs native bf16)",
    "LORA_LAB_DATA_DIR": "where the SMS Spam Collection is cached (default: the checkout's data/)",
    "LORA_LAB_COMMIT": "the commit results record when the code runs from a copy without .git",
    "LORA_LAB_RUN_ALL": "1: a lesson recomputes its whole sweep instead of reading the committed results",
    "LORA_LAB_QUICK": "1: the profile's model on 60 messages per class for one epoch (a quick run; says so)",
    "LORA_LAB_THREADS": "polite or keep: how OpenMP threads wait (read by lora_lab.utils.threads, before torch)",
}


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value, stripped; ``default`` when it is unset or empty."""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not one of lora_lab's variables: add it to VARIABLES with what it does")
    value = os.environ.get(name, "").strip()
    return value or default


def _one_of(name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    """The variable's value when it is one of ``allowed``; a garbage value is an error naming the variable, so
    a typo never silently means the default."""
    value = get(name)
    if value is None:
        return default
    if value.lower() not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}: fix or unset it ({VARIABLES[name]})")
    return value.lower()


def profile() -> str:
    """``LORA_LAB_PROFILE`` as written (lower case), ``real`` by default; get_settings names a bad one."""
    return (get("LORA_LAB_PROFILE") or "real").lower()


def progress() -> bool:
    """Progress output wanted: not under CI (``$CI``) and not with ``LORA_LAB_PROGRESS=0`` (bars write to stderr,
    which a saved notebook or a CI log should not hold)."""
    return _one_of("LORA_LAB_PROGRESS", ("0", "1"), "1") == "1" and not os.environ.get("CI")


def widgets() -> bool | None:
    """``LORA_LAB_WIDGETS``: True for 1, False for 0, None (guess) otherwise."""
    return {"1": True, "0": False, None: None}[_one_of("LORA_LAB_WIDGETS", ("0", "1"))]


def device() -> str | None:
    """``LORA_LAB_DEVICE``, checked to name a device torch knows (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    value = get("LORA_LAB_DEVICE")
    if value is not None:
        import torch  # here, not at the top: lora_lab.utils.threads reads its variable before torch loads

        try:
            torch.device(value)
        except RuntimeError:
            raise ValueError(f"LORA_LAB_DEVICE={value!r} is not a device torch knows: use cpu, cuda, cuda:0 or "
                             "mps, or unset it") from None
    return value


def precision() -> str:
    return _one_of("LORA_LAB_PRECISION", ("auto", "fp32", "bf16", "fp16"), "auto")


def cpu_bf16() -> bool | None:
    """``LORA_LAB_CPU_BF16``: True for 1, False for 0, None (measure) otherwise."""
    return {"1": True, "0": False, None: None}[_one_of("LORA_LAB_CPU_BF16", ("0", "1"))]


def data_dir() -> str | None:
    """``LORA_LAB_DATA_DIR`` with ``~`` expanded; a path that is not a folder and cannot be created as one (a file
    is there or above it, its parent is not writable) is an error naming the variable."""
    value = get("LORA_LAB_DATA_DIR")
    if value is None:
        return None
    value = os.path.expanduser(value)
    if os.path.exists(value) and not os.path.isdir(value):
        raise ValueError(f"LORA_LAB_DATA_DIR={value!r} is a file, not a folder: point it at a folder (it is "
                         "created if missing), or unset it")
    problem = folder_problem(value)
    if problem:
        raise ValueError(f"LORA_LAB_DATA_DIR={value!r} cannot be a folder: {problem}. Point it at a folder (it is "
                         "created if missing), or unset it")
    return value


def commit() -> str | None:
    return get("LORA_LAB_COMMIT")


def run_all() -> bool:
    """``LORA_LAB_RUN_ALL=1``: the lessons recompute their sweeps (lora_lab.experiments.sweeps) instead of reading
    the committed results."""
    return _one_of("LORA_LAB_RUN_ALL", ("0", "1"), "0") == "1"


def quick() -> bool:
    """``LORA_LAB_QUICK=1``: the notebooks train on a small subset for one epoch (see
    :mod:`lora_lab.experiments.profiles`)."""
    return _one_of("LORA_LAB_QUICK", ("0", "1"), "0") == "1"
