"""The fine-tune the notebooks, the claims, the bf16 check and ``python -m lora_lab.finetune`` all run (one
core), and how a spread over seeds is reported. (What a run costs, in memory, checkpoint bytes and latency, is
:mod:`lora_lab.train.measure`.)

Every function takes a :class:`lora_lab.experiments.profiles.Backbone`, so the same call fine-tunes GPT-2 (real
profile), all-MiniLM-L6-v2 (offline) or the tiny random GPT-2 (smoke).
"""
from __future__ import annotations

import pandas as pd
import torch

from ..lora.model import count_parameters
from ..train.loop import evaluate, train_classifier
from ..train.methods import apply_method
from ..utils.machine import set_seed
from .gpu_memory import check_gpu_memory

__all__ = ["finetune", "seed_spread"]


def finetune(backbone, method: str, train_ds, val_loader, test_loader=None, *, seed: int = 123,
             epochs: int = 3, batch_size: int = 8, lr: float | None = None, rank: int = 16, alpha: float = 16,
             device="cpu", log=None, precision: str = "auto", bucket: bool | str | None = None,
             weight_decay: float | None = None, world: int = 1, ddp_rank: int = 0, on_start=None,
             **lora_kwargs) -> dict:
    """One fine-tuning run from the pretrained backbone: seed, fresh classifier, method, train, test. The one
    fine-tuning core: the notebooks, the claims, the bf16 check and ``python -m lora_lab.finetune`` all run it.

    Returns a dict with the trained ``model``, its ``hist`` (one row per epoch), ``test_acc``,
    ``val_acc`` (last epoch), ``params`` and ``trainable`` parameters, ``train_s`` (training time, evaluation
    excluded), ``tokens_per_s``, ``lr`` and ``seed``. ``lora_kwargs`` go to :func:`apply_method`
    (``target``, ``use_rslora``, ``init``, ``dropout``). Under DistributedDataParallel (``world`` processes,
    this one ``ddp_rank``) each process trains on its share of ``train_ds`` and the model is wrapped in DDP;
    the loaders given for evaluation should hold this process's share. ``on_start(model, lr)`` is called once
    the model is built, before training (the command line prints what will train).
    """
    # on a GPU: say what the step will need, and refuse now (naming what would fit) rather than on the first step
    check_gpu_memory(backbone.name, method, batch_size, device, rank=rank, log=log or print)
    set_seed(seed)  # the same head init, LoRA init and batch order for a given seed
    model = apply_method(backbone.classifier(device=device), method, rank, alpha, **lora_kwargs)
    lr = backbone.lr[method] if lr is None else lr
    loader = backbone.loader(train_ds, batch_size, shuffle=True, seed=seed, bucket=bucket, num_replicas=world,
                             rank=ddp_rank)
    train_model = model
    if world > 1:
        device_ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if on_start is not None:
        on_start(model, lr)
    extra = {} if weight_decay is None else {"weight_decay": weight_decay}
    hist = train_classifier(train_model, loader, val_loader, epochs=epochs, lr=lr, device=device, log=log,
                            precision=precision, **extra)
    params = count_parameters(model)
    out = {"model": model, "hist": hist, "method": method, "seed": seed, "lr": lr, "params": params,
           "trainable": params.trainable, "val_acc": float(hist["val_acc"].iloc[-1]),
           "train_acc": float(hist["train_acc"].iloc[-1]), "train_s": float(hist["epoch_s"].sum()),
           "tokens_per_s": float(hist["tokens_per_s"].mean())}
    if test_loader is not None:
        test = evaluate(train_model, test_loader, torch.device(device))  # in fp32, whatever precision trained
        out["test_acc"], out["test_loss"] = test["accuracy"], test["loss"]
    out["precision"] = hist.attrs.get("precision")
    return out


def seed_spread(values, n_test: int | None = None) -> str:
    """``"96.9% (min 96.3%, max 97.3%, 3 seeds)"`` for accuracies given as shares; with ``n_test`` it
    adds what one test message is worth, the resolution a difference must beat."""
    s = pd.Series(list(values), dtype=float)
    txt = f"{s.mean():.1%} (min {s.min():.1%}, max {s.max():.1%}, {len(s)} seed{'s' if len(s) != 1 else ''})"
    return txt + (f"; one test message = {1 / n_test:.2%}" if n_test else "")


