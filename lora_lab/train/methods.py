"""The three ways to fine-tune a classifier that the course compares: ``full``, ``last-block``, ``lora``.

One home for the vocabulary and the default learning rates, used by the notebooks, the CLI
(``python -m lora_lab.finetune``) and the benchmark. Where one name must also carry LoRA's rank (a row of the
benchmark table, a ``--methods`` argument) it is written ``lora-16``: :func:`parse_method` reads it and
:func:`method_name` writes it. It works on any classifier that names its own last block
(:meth:`lora_lab.models.gpt2.GPT.last_block_prefixes`,
:meth:`lora_lab.models.minilm.MiniLMClassifier.last_block_prefixes`).
"""
from __future__ import annotations

from torch import nn

from ..lora.model import mark_only_lora_trainable, mark_trainable, replace_linear_with_lora

__all__ = ["METHODS", "DEFAULT_LR", "MINILM_LR", "apply_method", "parse_method", "method_name"]

METHODS = ("lora", "full", "last-block")
# The course's learning rates, all in one place (AdamW). GPT-2 124M: LoRA with scaling 1 wants a ~10x larger
# step than full fine-tuning. all-MiniLM-L6-v2 (the offline track) uses larger steps for LoRA and for its last
# block alone; the committed offline results (README, notebooks 5-8) were trained with these values.
DEFAULT_LR = {"lora": 5e-4, "full": 5e-5, "last-block": 5e-5}
MINILM_LR = {"lora": 1e-3, "full": 5e-5, "last-block": 1e-4}


def parse_method(name: str) -> tuple[str, int | None]:
    """``"lora-16"`` -> ``("lora", 16)``; ``"full"`` -> ``("full", None)``; plain ``"lora"`` -> ``("lora", None)``
    (the caller's default rank). Anything else is a ``ValueError`` that lists what is accepted."""
    if name in METHODS:
        return name, None
    prefix, _, rank = str(name).partition("-")
    if prefix == "lora" and rank.isascii() and rank.isdigit() and int(rank) > 0:
        return "lora", int(rank)
    raise ValueError(f"method must be one of {METHODS}, or lora-<rank> with a positive whole rank such as "
                     f"lora-16, got {name!r}")


def method_name(method: str, rank: int | None = None) -> str:
    """The inverse of :func:`parse_method`: ``("lora", 16)`` -> ``"lora-16"``, ``("full", None)`` -> ``"full"``."""
    return f"{method}-{rank}" if method == "lora" and rank is not None else method


def apply_method(model: nn.Module, method: str, rank: int = 16, alpha: float = 16, *, target="all",
                 dropout: float = 0.0, use_rslora: bool = False, init: str = "peft") -> nn.Module:
    """Make a classifier trainable by one of three methods (in place; returns the model).

    * ``full``: every parameter.
    * ``last-block``: the last transformer block, the final norm (if any) and the head - the
      textbook baseline.
    * ``lora``: LoRA on the chosen Linear layers, plus the new head; everything else frozen.
    """
    if method == "full":
        model.requires_grad_(True)
    elif method == "last-block":
        if not hasattr(model, "last_block_prefixes"):
            raise TypeError(f"{type(model).__name__} does not say which parameters form its last block "
                            "(a last_block_prefixes() method); use method='full' or 'lora'")
        model.requires_grad_(False)
        mark_trainable(model, model.last_block_prefixes())
    elif method == "lora":
        replace_linear_with_lora(model, rank, alpha, target=target, dropout=dropout, use_rslora=use_rslora,
                                 init=init)
        mark_only_lora_trainable(model, extra=["classifier"])
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return model
