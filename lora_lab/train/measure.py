"""What a run costs: memory by kind (weights, gradients, optimizer state, activations), checkpoint bytes,
and inference latency."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..lora.model import lora_state_dict
from .loop import make_optimizer

__all__ = ["checkpoint_bytes", "memory_breakdown", "latency_ms"]


def checkpoint_bytes(model: nn.Module, method: str) -> int:
    """Bytes of the safetensors file that this method must store: the adapter and head (``lora``), the
    trained tensors (``last-block``), or the whole model (``full``). Used by the notebooks and the benchmark."""
    from safetensors.torch import save_file

    if method == "lora":
        tensors = lora_state_dict(model, ["classifier"])
    elif method == "last-block":
        tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    else:
        tensors = model.state_dict()
    seen, unique = set(), {}  # tied weights (GPT-2's LM head is its token embedding) are stored once
    for k, v in tensors.items():
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            unique[k] = v.detach().contiguous().cpu()
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "checkpoint.safetensors"
        save_file(unique, str(f))
        return f.stat().st_size


def memory_breakdown(model: nn.Module, batch, lr: float = 1e-4) -> dict:
    """Where the memory of one training step goes, measured by counting the tensors themselves
    (the same on CPU and GPU, independent of the allocator):

    * ``weights``: every parameter (frozen or not);
    * ``gradients``: the ``.grad`` tensors after ``backward()`` - only trainable parameters get one;
    * ``optimizer state``: AdamW's two moments per trainable parameter, after one step;
    * ``activations``: the tensors autograd saves in the forward pass to compute the backward pass
      (counted with ``torch.autograd.graph.saved_tensors_hooks``; a tensor saved twice counts once).

    Returns bytes per part. Runs one real optimizer step on ``model`` (so pass a copy you can spare).
    """
    saved: dict[int, int] = {}

    def pack(t):
        if t.device.type != "meta":
            key = t.untyped_storage().data_ptr()
            saved[key] = max(saved.get(key, 0), t.untyped_storage().nbytes())
        return t

    params = {id(p): p for p in model.parameters()}.values()
    weight_ptrs = {p.untyped_storage().data_ptr() for p in params}
    model.train()
    opt = make_optimizer(model, lr)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(batch.input_ids, batch.lengths)
        loss = F.cross_entropy(logits.float(), batch.labels)
    loss.backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    opt.step()
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    opt.zero_grad(set_to_none=True)
    return {"weights": sum(p.numel() * p.element_size() for p in params), "gradients": grads,
            "optimizer state": state,
            # weights that autograd keeps for the backward pass are already counted as weights
            "activations": sum(b for ptr, b in saved.items() if ptr not in weight_ptrs)}


@torch.no_grad()
def latency_ms(model: nn.Module, batch, reps: int = 30, warmup: int = 3) -> float:
    """Median wall time of one forward pass on ``batch``, in milliseconds (GPU work synchronised)."""
    import statistics

    cuda = batch.input_ids.is_cuda
    times = []
    for i in range(reps + warmup):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(batch.input_ids, batch.lengths)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)
