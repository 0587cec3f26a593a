"""The experiments the notebooks run, each in one place: one fine-tune, seed spreads, checkpoint sizes,
and where the memory of a training step goes.

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

__all__ = ["finetune", "seed_spread"]


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


