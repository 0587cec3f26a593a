"""Small helpers for running the notebooks live: timing each step, naming the machine."""
from __future__ import annotations

import contextlib
import os
import platform
import time

__all__ = ["timed", "machine", "cpu_flags"]

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


def machine(device=None, short: bool = False) -> str:
    """The device the notebook runs on, in words (for labelling timings): the GPU's name, or the CPU's
    model, core count and the flags that matter for speed. ``short`` leaves out torch's version."""
    import torch

    if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    desc = f"CPU: {name}, {os.cpu_count()} cores" + (f" [{' '.join(flags)}]" if flags else "")
    return desc if short else f"{desc}, torch {torch.__version__}"
