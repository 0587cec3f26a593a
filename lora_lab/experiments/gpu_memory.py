"""Will a fine-tune fit on this GPU? An estimate from the committed GPU measurement, checked before training.

The free Colab GPU is a T4 with 15 GB. A learner who picks ``gpt2-xl`` and full fine-tuning there would wait for
the download and the model, then crash on the first step. So before training on a GPU, :func:`check_gpu_memory`
prints what the step will need and refuses early when it cannot fit, naming what would: a smaller batch, a
smaller GPT-2, or LoRA instead of full fine-tuning.

The estimate is a measurement, scaled: ``python -m lora_lab.bench`` recorded the peak memory of one training step
for every GPT-2 size and method at batch 8 with 16-bit autocast on a GPU (``benchmarks/cuda-*.json``, shipped with
the package). The peak splits into a part that does not grow with the batch (fp32 weights, one fp32 gradient and
AdamW's two fp32 moments per trainable parameter) and the rest, mostly the activations kept for the backward
pass, which grows in proportion to the batch. A T4 trains in fp16 autocast, whose tensors are as wide as bf16's,
so the bf16 measurement applies; messages are padded per batch, as in the course. Sizes and methods the file has
not measured (MiniLM, a local folder) get no estimate, and the check says so instead of guessing.
"""
from __future__ import annotations

import torch

from .bench_results import committed_results, summary_table

__all__ = ["GPUMemoryError", "measured_step", "estimate_mib", "check_gpu_memory"]

MIB = 2**20
HEADROOM = 0.9  # the CUDA context, the allocator's fragmentation and evaluation need the rest
SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


class GPUMemoryError(MemoryError):
    """A fine-tune that would not fit on this GPU; the message says what would."""


def _method_key(method: str, rank: int) -> str:
    return f"lora-{rank}" if method == "lora" else method


def measured_step(model: str, method: str, rank: int = 16):
    """The committed GPU measurement of one training step for this GPT-2 size and method (a row of
    :func:`lora_lab.experiments.bench_results.summary_table` with its batch size, parameters and device), or None."""
    key = _method_key(method, rank)
    for name, res in committed_results():
        if not res.get("device_type", "").startswith("cuda"):
            continue
        full = res["results"]
        table = summary_table(res)
        hit = table[(table["shape"] == model) & (table["method"] == key)]
        if len(hit):  # the table keeps the results' positions as its index
            return {**full[int(hit.index[0])], "device": res["device"], "file": name}
    return None


def estimate_mib(model: str, method: str, batch_size: int, rank: int = 16) -> float | None:
    """The peak memory (MiB) of one training step at ``batch_size``, scaled from the committed measurement; None
    where the file has none for this size and method."""
    row = measured_step(model, method, rank)
    if row is None:
        return None
    fixed = (4 * row["params_total"] + 4 * row["params_trainable"]) / MIB + row["optimizer_state_mb"]
    activations = max(row["peak_mem_mb"] - fixed, 0.0)
    return fixed + activations * batch_size / row["batch_size"]


def _fits(model, method, batch_size, rank, total_mib) -> bool:
    est = estimate_mib(model, method, batch_size, rank)
    return est is not None and est <= HEADROOM * total_mib


def check_gpu_memory(model: str, method: str, batch_size: int, device, *, rank: int = 16, log=print,
                     total_bytes: int | None = None) -> float | None:
    """Before training on a GPU: log the estimated peak of a training step against the GPU's memory, and raise
    :class:`GPUMemoryError` naming a smaller batch, a smaller GPT-2 or LoRA when it would not fit. Does nothing on a
    CPU (unless ``total_bytes`` is given, as the tests do). Returns the estimate in MiB, or None."""
    device = torch.device(device)
    if total_bytes is None:
        if device.type != "cuda" or not torch.cuda.is_available():
            return None
        total_bytes = torch.cuda.get_device_properties(device).total_memory
    total_mib = total_bytes / MIB
    est = estimate_mib(model, method, batch_size, rank)
    if est is None:
        if log:
            log(f"GPU memory: no committed measurement for {model} {_method_key(method, rank)}, so no estimate "
                f"({total_mib / 1024:.1f} GiB on this GPU)")
        return None
    if est > HEADROOM * total_mib:
        batches = [b for b in (16, 8, 4, 2, 1) if b < batch_size and _fits(model, method, b, rank, total_mib)]
        smaller = [s for s in SIZES[:SIZES.index(model)] if _fits(s, method, batch_size, rank, total_mib)]
        ways = ([f"batch_size={batches[0]}"] if batches else []) + ([f"model {smaller[-1]!r}"] if smaller else [])
        if method != "lora" and _fits(model, "lora", batch_size, rank, total_mib):
            ways.append("method 'lora'")
        raise GPUMemoryError(
            f"{model} {_method_key(method, rank)} at batch {batch_size} needs about {est / 1024:.1f} GiB, more than "
            f"{HEADROOM:.0%} of this GPU's {total_mib / 1024:.1f} GiB: it would run out of memory on its first step. "
            f"Use {' or '.join(ways) if ways else 'a GPU with more memory'} (estimate scaled from the committed "
            "measurement at batch 8, lora_lab.experiments.gpu_memory)")
    if log:
        log(f"GPU memory: about {est / 1024:.1f} GiB of this GPU's {total_mib / 1024:.1f} GiB for {model} "
            f"{_method_key(method, rank)} at batch {batch_size} (scaled from the committed measurement at batch 8)")
    return est
