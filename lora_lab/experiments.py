"""The experiments the notebooks run, each in one place: one fine-tune, seed spreads, checkpoint sizes,
and where the memory of a training step goes.

Every function takes a :class:`lora_lab.settings.Backbone`, so the same call fine-tunes GPT-2 (real
profile), all-MiniLM-L6-v2 (offline) or the tiny random GPT-2 (smoke).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .lora import count_parameters, lora_state_dict
from .methods import apply_method
from .train import evaluate, make_optimizer, set_seed, train_classifier

__all__ = ["finetune", "seed_spread", "checkpoint_bytes", "memory_breakdown", "latency_ms"]


def finetune(backbone, method: str, train_ds, val_loader, test_loader=None, *, seed: int = 123,
             epochs: int = 3, batch_size: int = 8, lr: float | None = None, rank: int = 16, alpha: float = 16,
             device="cpu", log=None, precision: str = "auto", bucket: bool | None = None, **lora_kwargs) -> dict:
    """One fine-tuning run from the pretrained backbone: seed, fresh classifier, method, train, test.

    Returns a dict with the trained ``model``, its ``hist`` (one row per epoch), ``test_acc``,
    ``val_acc`` (last epoch), ``trainable`` parameters, ``train_s`` (training time, evaluation
    excluded), ``tokens_per_s``, ``lr`` and ``seed``. ``lora_kwargs`` go to :func:`apply_method`
    (``target``, ``use_rslora``, ``init``, ``dropout``).
    """
    set_seed(seed)  # the same head init, LoRA init and batch order for a given seed
    model = apply_method(backbone.classifier(device=device), method, rank, alpha, **lora_kwargs)
    lr = backbone.lr[method] if lr is None else lr
    loader = backbone.loader(train_ds, batch_size, shuffle=True, seed=seed, bucket=bucket)
    hist = train_classifier(model, loader, val_loader, epochs=epochs, lr=lr, device=device, log=log,
                            precision=precision)
    out = {"model": model, "hist": hist, "method": method, "seed": seed, "lr": lr,
           "trainable": count_parameters(model).trainable, "val_acc": float(hist["val_acc"].iloc[-1]),
           "train_acc": float(hist["train_acc"].iloc[-1]), "train_s": float(hist["epoch_s"].sum()),
           "tokens_per_s": float(hist["tokens_per_s"].mean())}
    if test_loader is not None:
        test = evaluate(model, test_loader, torch.device(device))  # in fp32, whatever precision trained
        out["test_acc"], out["test_loss"] = test["accuracy"], test["loss"]
    out["precision"] = hist.attrs.get("precision")
    return out


def seed_spread(values, n_test: int | None = None) -> str:
    """``"96.9% (min 96.3%, max 97.3%, 3 seeds)"`` for accuracies given as shares; with ``n_test`` it
    adds what one test message is worth, the resolution a difference must beat."""
    s = pd.Series(list(values), dtype=float)
    txt = f"{s.mean():.1%} (min {s.min():.1%}, max {s.max():.1%}, {len(s)} seed{'s' if len(s) != 1 else ''})"
    return txt + (f"; one test message = {1 / n_test:.2%}" if n_test else "")


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
