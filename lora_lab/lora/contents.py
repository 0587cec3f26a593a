"""What an adapter file holds, in either format (lora_lab's or PEFT's):
the tensors, the hyperparameters, and the error for an adapter that does not fit a model."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["AdapterContents", "AdapterMismatchError"]


class AdapterMismatchError(ValueError):
    """An adapter file does not fit the model it is being loaded onto."""


ADAPTER_WEIGHTS = "adapter.safetensors"


ADAPTER_CONFIG = "adapter_config.json"


ADAPTER_FORMAT = "lora_lab.adapter/1"


SCALING_RULES = {"alpha/rank": False, "alpha/sqrt(rank)": True}  # rule -> use_rslora


@dataclass
class AdapterContents:
    """An adapter read from disk and verified, in this package's names; no model has been touched.

    Both formats (ours and PEFT's) are read into this one shape, so checking that it fits a model and
    loading it are the same code for both."""

    path: Path
    config: dict  # what load_adapter returns: the folder's config as written
    layers: list[str]  # the wrapped layers, as in model.named_modules()
    hparams: dict  # rank, alpha, use_rslora, dropout (shared by all layers)
    tensors: dict[str, torch.Tensor]  # LoRA A/B and extra modules, named as in model.state_dict()
    base_model: str | None = None  # compared with the model's name when both are known
    base_revision: str | None = None
    base_weights_sha256: str | None = None  # a warning when the model's weights differ
    sources: dict[str, str] = field(default_factory=dict)  # tensor -> its name in the file, where that differs


def check_finite(tensors: dict, path: Path) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"adapter {path} holds NaN or infinite values in {bad[:5]}: it was saved from a model "
                         "whose training diverged. Train again (lower the learning rate) and save again.")


def check_config_rank(rank: int, ranks: dict[str, int], where: str) -> None:
    """The rank a config declares against the rank of its LoRA tensors (``ranks``: layer -> the rank its ``A``
    has). When every layer agrees on another rank, the config is what is wrong (an edited ``rank`` of 10**12
    used to be reported as every tensor having the wrong shape): ``ValueError`` naming ``where`` and both ranks."""
    found = set(ranks.values())
    if len(found) == 1 and rank not in found:
        (actual,) = found
        raise ValueError(f"{where} is {rank}, but the adapter's LoRA tensors have rank {actual} (e.g. "
                         f"{next(iter(ranks))}): the config was edited or belongs to another adapter. Set it to "
                         f"{actual}, or save the adapter again.")


def lora_a_rank(A: torch.Tensor) -> int | None:
    """The rank of a lora_lab ``A``: ``(in, rank)`` for a Linear, ``(rank, in, kh, kw)`` for a Conv2d."""
    return A.shape[1] if A.dim() == 2 else A.shape[0] if A.dim() == 4 else None


SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
