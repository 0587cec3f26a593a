"""Which layers LoRA wraps: presets, name patterns, what is never wrapped, and the
plan-check-swap that every ``replace_*_with_lora`` shares (nothing changes unless every layer can be wrapped)."""
from __future__ import annotations

import fnmatch
from typing import Sequence

from torch import nn

__all__ = ["TARGET_PRESETS", "DEFAULT_EXCLUDE"]


# Which Linear layers to wrap. Patterns are shell-style globs over the module's full
# name (as in ``model.named_modules()``); they cover our GPT-2, Hugging Face GPT-2 and
# BERT-style models (MiniLM) alike.
ATTENTION_PATTERNS = ("*attn*", "*attention*")


MLP_PATTERNS = ("*mlp*", "*intermediate*", "*.output.dense")


TARGET_PRESETS = ("all", "attention", "mlp")


# Output heads are skipped by default: a *new* classification head should be trained in
# full (it is tiny and starts random), and an LM head is tied to the token embedding.
DEFAULT_EXCLUDE = ("lm_head", "classifier", "score", "out_head")


def _is_target(name: str, target, exclude: Sequence[str]) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    if any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(leaf, p) for p in exclude):
        return False
    if target == "all":
        return True
    in_attn = any(fnmatch.fnmatchcase(name, p) for p in ATTENTION_PATTERNS)
    if target == "attention":
        return in_attn
    if target == "mlp":
        return not in_attn and any(fnmatch.fnmatchcase(name, p) for p in MLP_PATTERNS)
    if isinstance(target, str):
        raise ValueError(f"target must be one of {TARGET_PRESETS} or a list of name patterns, got {target!r}")
    return any(fnmatch.fnmatchcase(name, p) for p in target)


def wrap_layers(model: nn.Module, wrapper: type, base_type: type, rank: int, alpha: float, *, target, exclude,
                 dropout: float, use_rslora: bool, init: str, check=None) -> tuple[list[str], list[str]]:
    """Wrap every ``base_type`` layer of ``model`` that ``target``/``exclude`` select in ``wrapper``, in place.

    The one implementation behind :func:`replace_linear_with_lora` and
    :func:`lora_lab.lora.replace_conv2d_with_lora`, in three steps so that an error leaves the model exactly as
    it was (not half wrapped): 1. walk the model and plan, checking every layer (a layer already wrapped with
    other settings is a conflict; ``check(layer, name)``, when given, may refuse a target); 2. build every
    wrapper; 3. swap them in. Layers already wrapped with the same settings are left alone (no nested
    wrappers). Returns the names wrapped now and the names that were wrapped already.
    """
    planned, existing, conflicts = [], [], []

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if isinstance(child, wrapper):
                if (child.lora.rank, child.lora.alpha, child.lora.use_rslora) != (rank, alpha, use_rslora):
                    conflicts.append(f"{name} is already wrapped with rank={child.lora.rank}, "
                                     f"alpha={child.lora.alpha}, use_rslora={child.lora.use_rslora}")
                existing.append(name)
            elif isinstance(child, base_type):
                if _is_target(name, target, exclude):
                    if check is not None:
                        check(child, name)
                    planned.append((module, child_name, child, name))
            else:
                visit(child, f"{name}.")

    visit(model, "")  # 1. plan and check: nothing changed yet
    if conflicts:
        raise ValueError(f"{conflicts[0]}; cannot wrap it again with rank={rank}, alpha={alpha}, "
                         f"use_rslora={use_rslora} ({len(conflicts)} layer(s) conflict; nothing was changed). "
                         "Start from the base model, or use the same settings.")
    new = [wrapper(child, rank, alpha, dropout=dropout, use_rslora=use_rslora, init=init)
           for _, _, child, _ in planned]  # 2. build every wrapper (this can still fail: nothing changed yet)
    for (module, child_name, _, _), layer in zip(planned, new):  # 3. swap them in
        setattr(module, child_name, layer)
    return [name for *_, name in planned], existing
