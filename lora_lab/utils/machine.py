"""The machine a number was measured on, and what a run needs of it: timing each step, naming the CPU or GPU,
the device to use, seeds, peak memory, and the checkout and commit a result comes from.

Naming the machine lives here, once, for every place that labels a number with where it was measured:
the notebooks (:func:`machine`), ``python -m lora_lab.bench`` and ``python -m lora_lab.finetune``
(:func:`device_name`, recorded in their JSON files). A timing without its machine cannot be compared.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import platform
import random
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from . import env

__all__ = ["timed", "machine", "device_name", "cpu_name", "cpu_flags", "checkout_root", "git_commit",
           "committed_file", "device_problem", "pick_device", "set_seed", "peak_memory_bytes", "reset_peak_memory",
           "slug"]

# the instruction-set extensions that decide how fast fp32 and bf16 matrix products run on a CPU
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@contextlib.contextmanager
def timed(label: str):
    """``with timed("training"):`` prints how long the block took, so a class sees what each step costs."""
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    print(f"⏱ {label}: {dt:.1f} s" if dt >= 0.1 else f"⏱ {label}: {1e3 * dt:.0f} ms")


def cpu_flags() -> list[str]:
    """Which of avx2 / avx512f / avx512_bf16 / amx_bf16 this CPU reports (Linux; empty elsewhere)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in _FLAGS if f in have]
    except OSError:
        pass
    return []


def cpu_name() -> str:
    """The CPU's model name, e.g. ``AMD EPYC 7B13``: from /proc/cpuinfo on Linux, ``sysctl`` on macOS, and
    Python's ``platform`` module elsewhere (on Windows e.g. ``Intel64 Family 6 Model 154 ...``)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
            if name:
                return name
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device="cpu") -> str:
    """What runs the numbers, in one line: the GPU's name (``NVIDIA H100 80GB HBM3``), or the CPU's model and
    core count (``AMD EPYC 7B13 (2 cores)``). Benchmark files are named after it, and ``metrics.json``
    records it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (MPS) of {cpu_name()}"
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def machine(device=None, short: bool = False) -> str:
    """The device the notebook runs on, in words (for labelling timings): the GPU's name, or the CPU's
    model, core count and the flags that matter for speed. ``short`` leaves out torch's version."""
    if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
        return f"GPU: {device_name(device or 'cuda')}"
    flags = cpu_flags()
    desc = f"CPU: {cpu_name()}, {os.cpu_count()} cores" + (f" [{' '.join(flags)}]" if flags else "")
    return desc if short else f"{desc}, torch {torch.__version__}"


def checkout_root() -> Path | None:
    """The repository checkout this package runs from (the folder holding ``pyproject.toml`` next to
    ``lora_lab/``), or None when it is installed from a wheel (e.g. on Colab). The one place that knows where
    the package sits in the checkout, so that moving a module cannot silently break a path to ``data/`` or
    ``benchmarks/``."""
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "lora_lab").is_dir():
            return folder
    return None


def git_commit() -> str | None:
    """The checkout's commit for a results file, ``+uncommitted changes`` appended when tracked files differ
    from it (a result from edited code must say so); ``$LORA_LAB_COMMIT`` where the code runs from a copy
    without ``.git`` (the GPU machine); None outside a git checkout."""
    if env.commit():
        return env.commit()
    root = checkout_root()
    if root is None:
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        if not head:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def committed_file(*parts: str) -> Path | None:
    """A committed results file, e.g. ``committed_file("claims", "claims-offline.json")``: the checkout's
    ``benchmarks/`` first, else the copy that ships inside the installed package as ``lora_lab.benchmarks`` (on
    Colab, where there is no checkout); None when neither has it."""
    root = checkout_root()
    if root is not None and root.joinpath("benchmarks", *parts).is_file():
        return root.joinpath("benchmarks", *parts)
    try:
        from importlib.resources import files as package_files

        f = package_files("lora_lab.benchmarks").joinpath(*parts)
        return Path(str(f)) if f.is_file() else None
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device this machine can train on (not one torch knows, a GPU that is not here), or
    None when it is. Nothing is allocated on it."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        return f"{name!r} is not a device torch knows"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return ("no CUDA GPU is available here (torch.cuda.is_available() is False: no GPU, no driver, or a "
                    "PyTorch built without CUDA)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}"
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            return "Apple's MPS is not available here"
    elif dev.type != "cpu":
        return f"lora_lab trains on cpu, cuda or mps, not {dev.type}"
    return None


def pick_device(prefer: str | None = None) -> torch.device:
    """``$LORA_LAB_DEVICE`` or ``prefer`` if given, else cuda > mps > cpu."""
    prefer = prefer or env.device()
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators: a fixed seed gives the same head init, LoRA init,
    dropout and batch order, so a run can be repeated number for number. Any whole number from 0 to 2**32 - 1
    (NumPy's range), NumPy's integers included (``np.arange`` in a sweep); checked before any generator changes."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be a whole number from 0 to 2**32 - 1, got {seed!r}; e.g. seed=123")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> float:
    """CUDA: peak bytes allocated by tensors since the last reset. CPU: the process's peak resident
    set size (a high-water mark over the process's whole life).

    The CPU number comes from ``resource`` on Linux and macOS, and from ``psutil`` (the peak working set) on
    Windows, which has no ``resource`` module; without psutil there it is NaN ("not measured", with a
    warning that says how to get it), never a made-up 0."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource  # Unix only: importing it at the top would break `import lora_lab` on Windows
    except ImportError:
        try:
            import psutil
        except ImportError:
            warnings.warn("peak memory is not measured on this system without psutil (pip install psutil); "
                          "peak_mem_mb is NaN", RuntimeWarning, stacklevel=2)
            return float("nan")
        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))  # Windows' peak working set
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS reports bytes, Linux KiB


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
