"""Small helpers for running the notebooks live: timing each step, naming the machine."""
from __future__ import annotations

import contextlib
import os
import platform
import time

__all__ = ["timed", "machine"]


@contextlib.contextmanager
def timed(label: str):
    """``with timed("training"):`` prints how long the block took, so a class sees what each step costs."""
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    print(f"⏱ {label}: {dt:.1f} s" if dt >= 0.1 else f"⏱ {label}: {1e3 * dt:.0f} ms")


def machine() -> str:
    """The device the notebook runs on, in words (for labelling timings)."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {name}, {os.cpu_count()} cores, torch {torch.__version__}"
