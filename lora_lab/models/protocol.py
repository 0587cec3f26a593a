"""What every backbone the course fine-tunes provides: the written contract between a model and the rest of
lora_lab. The training loop, the methods, the claims' measures and the adapter files use only these members,
so adding a model means writing its module (implementing :class:`Classifier`) and one entry in the profiles'
backbone registry (:mod:`lora_lab.experiments.profiles`); nothing asks ``isinstance(model, GPT)``.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Classifier", "length_mask"]


def length_mask(input_ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``(batch, seq)`` long tensor, 1 on each row's real tokens and 0 on its right padding (``lengths`` counts a
    row's real tokens; ``None`` means no padding). The one home of this mask: models, measures and exercises."""
    if lengths is None:
        return torch.ones_like(input_ids)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    return (positions < lengths.to(input_ids.device)[:, None]).long()


@runtime_checkable
class Classifier(Protocol):
    """A sequence classifier: token ids in (right-padded, with each row's length), class logits out.

    * ``config``: the model's settings; loaded from pretrained weights it also carries ``name`` (or
      ``_name_or_path``), ``revision`` and ``weights_sha256``, which adapter files record and check.
    * ``classifier``: the new head (``nn.Linear(width, num_classes)``); methods train it besides LoRA.
    """

    config: Any
    classifier: nn.Module

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits, ``(batch, num_classes)``."""

    def token_states(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The final hidden state of every token, ``(batch, seq, width)``: what the head pools, and what the
        claims' measures compare before and after fine-tuning."""

    def last_block_prefixes(self) -> list[str]:
        """Parameter-name prefixes that ``method="last-block"`` trains (the last block and the head)."""
