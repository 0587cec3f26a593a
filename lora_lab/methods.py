"""The three ways to fine-tune a classifier that the course compares: ``full``, ``last-block``, ``lora``.

One home for the vocabulary and the default learning rates, used by the notebooks, the CLI
(``python -m lora_lab.finetune``) and the benchmark. It works on any classifier that names its own
last block (:meth:`lora_lab.gpt2.GPT.last_block_prefixes`, :meth:`lora_lab.minilm.MiniLMClassifier.last_block_prefixes`).
"""
from __future__ import annotations

from torch import nn

from .lora import mark_only_lora_trainable, mark_trainable, replace_linear_with_lora

__all__ = ["METHODS", "DEFAULT_LR", "apply_method"]

METHODS = ("lora", "full", "last-block")
# GPT-2 124M: LoRA with scaling 1 wants a ~10x larger step than full fine-tuning (AdamW).
DEFAULT_LR = {"lora": 5e-4, "full": 5e-5, "last-block": 5e-5}


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
