"""Which number format to train in on this machine, decided by the hardware and measured, never guessed.

On GPUs mixed precision is the norm (bf16 where supported). On CPUs it depends on the processor:

* CPUs with native bf16 instructions (``avx512_bf16`` or Intel's AMX tiles, ``amx_bf16``) run bf16 matrix
  products in hardware, and autocast to bf16 can make training 2x faster or more;
* CPUs without them (many laptops, AVX2-only servers) *emulate* bf16: converting back and forth costs more
  than the smaller numbers save, and a bf16 step can be many times slower than plain fp32.

So ``precision="auto"`` on a CPU chooses bf16 only when the CPU reports a native bf16 instruction set
**and** a short measured probe (a layer-sized matrix product, forward and backward, a fraction of a
second) confirms bf16 is faster here; otherwise plain fp32. ``$LORA_LAB_PRECISION`` (``fp32``, ``bf16``,
``fp16`` or ``auto``) overrides the choice for every run, and ``precision="fp32"`` / ``--precision fp32``
for one.

Whether bf16 keeps the *accuracy* is a separate question, answered by measurement too::

    python -m lora_lab.precision quality          # fp32 vs bf16, LoRA and full, 3 seeds, offline model

which writes ``benchmarks/bf16-quality-<cpu>.json`` (re-running resumes where it stopped) and prints the
table the default rests on.
"""
from __future__ import annotations

import contextlib
import functools
import time

import torch

from . import env
from .machine import cpu_flags

__all__ = ["NATIVE_BF16_FLAGS", "cpu_has_native_bf16", "probe_cpu_bf16", "cpu_autocast_dtype", "precision_for",
           "precision_name", "make_grad_scaler", "autocast"]

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PROBE_MIN_SPEEDUP = 1.2  # bf16 must beat fp32 clearly, not by noise, to become the default


def cpu_has_native_bf16(flags=None) -> bool:
    """Does the CPU report a native bf16 instruction set (``/proc/cpuinfo`` flags; Linux only)?"""

    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def probe_cpu_bf16(width: int = 768, tokens: int = 256, reps: int = 5) -> dict:
    """Time one ``width``-wide linear layer's forward and backward on ``tokens`` rows, fp32 vs bf16 autocast.

    Returns ``{"fp32_ms", "bf16_ms", "speedup"}`` (medians of ``reps`` after a warm-up). Sized like one
    GPT-2 124M projection on a batch of short messages, so it answers for the shapes the course trains,
    in well under a second on a CPU with native bf16. Call it only where :func:`cpu_has_native_bf16` is
    true: on a CPU that emulates bf16 it can take far longer. It leaves the global random state as it found it,
    so a seeded run gives the same numbers whether or not it was the one that triggered the probe.
    """
    with torch.random.fork_rng(devices=[]):  # the layer's init must not use up the caller's seeded random stream:
        torch.manual_seed(0)                  # the probe runs inside the first training call, after its seed
        layer = torch.nn.Linear(width, 4 * width)
        x = torch.randn(tokens, width)

    def run(dtype):
        times = []
        for i in range(reps + 1):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                layer(x).float().square().mean().backward()
            if i:  # the first call warms up the kernels
                times.append(time.perf_counter() - t0)
        layer.zero_grad(set_to_none=True)
        return 1e3 * sorted(times)[len(times) // 2]

    fp32, bf16 = run(None), run(torch.bfloat16)
    return {"fp32_ms": fp32, "bf16_ms": bf16, "speedup": fp32 / bf16}


@functools.cache
def cpu_autocast_dtype() -> torch.dtype | None:
    """The CPU's ``precision="auto"`` choice: ``torch.bfloat16`` or ``None`` (plain fp32); decided once per
    process. ``$LORA_LAB_CPU_BF16=0``/``1`` skips the decision (``1`` still needs native bf16)."""
    forced = env.cpu_bf16()
    if forced is False or not cpu_has_native_bf16():
        return None
    if forced:
        return torch.bfloat16
    return torch.bfloat16 if probe_cpu_bf16()["speedup"] >= PROBE_MIN_SPEEDUP else None


def precision_name(dtype) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for an autocast dtype from :func:`precision_for` (``None`` is plain
    fp32) or for a spelling older results files used (``"torch.bfloat16"``, ``"bfloat16"``): the one spelling
    that training histories (``df.attrs["precision"]``), results files and ``metrics.json`` store."""
    names = {"None": "fp32", "fp32": "fp32", "torch.bfloat16": "bf16", "bfloat16": "bf16", "bf16": "bf16",
             "torch.float16": "fp16", "float16": "fp16", "fp16": "fp16"}
    return names.get(str(dtype), str(dtype))


def precision_for(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``); None means plain fp32.

    ``auto``: on CUDA bf16 where supported, else fp16; on a CPU bf16 only where the processor has native bf16
    instructions and a short probe measures it faster (:func:`lora_lab.utils.precision.cpu_autocast_dtype`: a CPU
    that emulates bf16 can be many times slower), else fp32; elsewhere (MPS) fp32.
    ``$LORA_LAB_PRECISION`` replaces ``auto`` for every run."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    forced = env.precision()
    if forced != "auto":
        return precision_for(device, forced)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return cpu_autocast_dtype()
    return None


def autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, amp_dtype) -> torch.amp.GradScaler:
    """The loss scaler for this precision: enabled for fp16 autocast (a T4, the free Colab GPU, has no bf16), where
    small gradients would underflow to zero without it; on a CPU too (``precision="fp16"``), so that the T4's
    branch runs, and is tested, without a GPU. An enabled scaler skips every step whose gradients overflowed
    (inf/NaN) and halves its scale; :func:`train_classifier` counts those steps. Disabled (fp32, bf16), it passes the
    loss and the optimizer step straight through, so every precision takes the same code path."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16 and device.type in ("cuda", "cpu"))
