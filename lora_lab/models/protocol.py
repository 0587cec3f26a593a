"""What every backbone the course fine-tunes provides: the written contract between a model and the rest of
lora_lab. The training loop, the methods, the claims' measures and the adapter files use only these members,
so adding a model means writing its module (implementing :class:`Classifier`) and a branch in
:func:`lora_lab.experiments.profiles.load_backbone`; nothing asks ``isinstance(model, GPT)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Classifier", "HFLayout", "length_mask"]


def length_mask(input_ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``(batch, seq)`` long tensor, 1 on each row's real tokens and 0 on its right padding (``lengths`` counts a
    row's real tokens; ``None`` means no padding). The one home of this mask: models, measures and exercises."""
    if lengths is None:
        return torch.ones_like(input_ids)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    return (positions < lengths.to(input_ids.device)[:, None]).long()


@dataclass(frozen=True)
class HFLayout:
    """How a model lines up with a Hugging Face transformers class: what the PEFT and transformers exports
    (:mod:`lora_lab.lora.interop`) need to know, declared by the model itself."""

    hf_class: str  # the transformers class the exported files load into
    prefix: str  # our name = prefix + the transformers name
    head: str | None  # our head module
    hf_head: str | None  # its transformers name (None: the head stays outside the transformers model)
    task_type: str | None  # PEFT's task type for the adapter config
    conv1d_weights: tuple[str, ...] = ()  # weights transformers stores (in, out), as GPT-2's Conv1D does

    @property
    def conv1d(self) -> bool:
        return bool(self.conv1d_weights)

    def to_hf(self, name: str) -> str | None:
        """A module or tensor name of ours in the transformers model, or None when it has none there."""
        if self.head and (name == self.head or name.startswith(self.head + ".")):
            return None if self.hf_head is None else self.hf_head + name[len(self.head):]
        return name[len(self.prefix):] if name.startswith(self.prefix) else None

    def from_hf(self, name: str) -> str:
        if self.hf_head and (name == self.hf_head or name.startswith(self.hf_head + ".")):
            return self.head + name[len(self.hf_head):]
        return self.prefix + name

    def transposed(self, hf_key: str) -> bool:
        return self.conv1d and hf_key.endswith(self.conv1d_weights)


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

    def hf_layout(self) -> HFLayout:
        """How its parameters map onto a transformers class (for PEFT folders and merged exports)."""

    def hf_config(self) -> dict:
        """The transformers ``config.json`` of that class (needs transformers)."""

    def hub_id(self) -> str | None:
        """The hub repository of its pretrained weights, or the folder they came from; None for random ones."""
