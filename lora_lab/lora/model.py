"""Wrapping a model with LoRA: replace its layers, find, merge and unmerge them, freeze all but LoRA,
count parameters, and take the LoRA state. The layer itself is :mod:`lora_lab.lora.layer`; which layers are
wrapped, :mod:`lora_lab.lora.targets`; adapter files, :mod:`lora_lab.lora.adapter_file`."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from .conv import Conv2dWithLoRA
from .layer import LinearWithLoRA, check_hparams, check_init
from .targets import DEFAULT_EXCLUDE, wrap_layers

__all__ = ["compiled_original", "replace_linear_with_lora", "lora_layers", "merge_lora", "unmerge_lora",
           "mark_only_lora_trainable", "mark_trainable", "ParamCount", "count_parameters", "lora_parameter_count",
           "lora_state_dict", "shared_hparams", "selects", "lora_parameter_names"]


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float, *,
                             target="all", exclude: Sequence[str] = DEFAULT_EXCLUDE,
                             dropout: float = 0.0, use_rslora: bool = False, init: str = "peft") -> nn.Module:
    """Wrap the model's ``nn.Linear`` layers in :class:`LinearWithLoRA`, recursively and in place.

    Args:
        target: ``"all"`` (every Linear), ``"attention"``, ``"mlp"``, or a list of glob
            patterns matched against full module names (e.g. ``["*.attn.c_attn"]``).
        exclude: glob patterns never wrapped; by default output heads (``lm_head``,
            ``classifier``, ...), which are trained in full or tied. Pass ``()`` to wrap them too.
        init: how ``A`` starts, ``"peft"`` (default) or ``"textbook"``; see :class:`LoRALayer`.

    Layers already wrapped are left as they are (no nested wrappers); wrapping them again
    with a different rank or alpha is an error. That check runs over the whole model *before*
    anything is wrapped, so an error leaves the model exactly as it was (not half wrapped).
    Returns ``model`` for convenience.
    """
    check_hparams(rank, alpha, dropout)
    check_init(init)
    wrapped, existing = wrap_layers(model, LinearWithLoRA, nn.Linear, rank, alpha, target=target, exclude=exclude,
                                     dropout=dropout, use_rslora=use_rslora, init=init)
    if not wrapped and not existing:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        hint = (f"its Linear layers are {linears[:6]}{' ...' if len(linears) > 6 else ''}; "
                f"check target={target!r} and exclude={tuple(exclude)!r}") if linears else \
            "it has no nn.Linear layer at all (LoRA here adapts nn.Linear layers)"
        raise ValueError(f"replace_linear_with_lora found no layer to wrap in {type(model).__name__}: {hint}")
    return model


# Base layer type -> its LoRA wrapper (the one registry a new adapter type joins). Everything generic below
# (finding, merging, freezing, saving and loading LoRA layers) works on any of them, so a model may mix Linear and
# Conv2d LoRA layers.
LORA_WRAPPERS: dict[type, type] = {nn.Linear: LinearWithLoRA, nn.Conv2d: Conv2dWithLoRA}


def wrapper_for(module: nn.Module):
    """The LoRA wrapper class for this base layer, or None when LoRA here cannot adapt it."""
    return next((w for base, w in LORA_WRAPPERS.items() if isinstance(module, base)), None)


def compiled_original(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile(model)`` (it shares its parameters), so that adapter files name the
    model's own modules, not ``_orig_mod.``-prefixed ones that would load onto nothing."""
    return getattr(model, "_orig_mod", model) if type(model).__name__ == "OptimizedModule" else model


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All LoRA-wrapped layers of a model (:class:`LinearWithLoRA`, :class:`lora_lab.lora.Conv2dWithLoRA`), by name."""
    wrappers = tuple(LORA_WRAPPERS.values())
    return {n: m for n, m in model.named_modules() if isinstance(m, wrappers)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer of the model (see :meth:`LinearWithLoRA.merge`)."""
    for m in lora_layers(model).values():
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for m in lora_layers(model).values():
        m.unmerge()
    return model


def selects(name: str, modules: Iterable[str]) -> bool:
    """Whether the parameter (or state-dict entry) ``name`` belongs to one of ``modules``.

    Every ``extra=`` argument in this module (:func:`mark_trainable`, :func:`mark_only_lora_trainable`,
    :func:`lora_state_dict`, :func:`save_adapter`) means the same thing, decided here: each entry is a module
    name, which selects that module's parameters (``"classifier"`` selects ``classifier.weight`` and
    ``classifier.bias``, but not ``classifier2.weight``), or a glob over full parameter names
    (``"*.ln_f.*"``). One rule, so what trains is what gets saved.
    """
    if isinstance(modules, str):
        raise TypeError(f"extra must be a list of module names or patterns, got the string {modules!r}; "
                        f"write [{modules!r}]")
    return any(name == m or name.startswith(m + ".") or fnmatch.fnmatchcase(name, m) for m in modules)


def lora_parameter_names(model: nn.Module) -> set[str]:
    """The state-dict names of every LoRA tensor (``<layer>.lora.A``, ``<layer>.lora.B``), found through
    :func:`lora_layers` rather than by spelling: a module that merely has ``lora`` in its name is not one."""
    return {k for n, m in lora_layers(model).items() for k in m.lora.state_dict(prefix=f"{n}.lora.")}


def mark_trainable(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Set ``requires_grad=True`` on the parameters of the named modules or matching globs (see :func:`selects`:
    ``"classifier"`` selects ``classifier.weight``). Returns the names."""
    patterns = list(patterns) if not isinstance(patterns, str) else patterns
    names = []
    for name, p in model.named_parameters():
        if selects(name, patterns):
            p.requires_grad_(True)
            names.append(name)
    return names


def mark_only_lora_trainable(model: nn.Module, extra: Iterable[str] = ("classifier",)) -> nn.Module:
    """Freeze everything except the LoRA ``A``/``B`` matrices and the ``extra`` modules (names or globs, see
    :func:`selects`; by default the new classification head, which starts random and must be trained)."""
    if not lora_layers(model):
        raise ValueError("the model has no LoRA layers; call replace_linear_with_lora(model, rank, alpha) first")
    lora_names = lora_parameter_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in lora_names)
    mark_trainable(model, extra)
    return model


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.trainable:,} trainable of {self.total:,} ({100 * self.fraction:.3f}%)"


def count_parameters(model: nn.Module) -> ParamCount:
    """Count parameters (shared/tied tensors once)."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return ParamCount(total, trainable)


def lora_parameter_count(shapes: Iterable[tuple[int, int]], rank: int) -> int:
    """Closed form: a LoRA layer on an ``in x out`` Linear adds ``rank * (in + out)`` parameters.

    ``shapes`` are ``(in_features, out_features)`` of the wrapped layers, e.g. from
    :func:`lora_lab.models.gpt2.linear_shapes`.
    """
    return sum(rank * (i + o) for i, o in shapes)


def lora_state_dict(model: nn.Module, extra: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The LoRA weights and the ``extra`` modules' (names or globs, as in :func:`mark_trainable`, see
    :func:`selects`; e.g. ``"classifier"``): what an adapter file holds."""
    extra = list(extra) if not isinstance(extra, str) else extra
    lora_names = lora_parameter_names(model)
    return {name: t.detach() for name, t in model.state_dict().items() if name in lora_names or selects(name, extra)}


def shared_hparams(model: nn.Module) -> dict:
    """The ``rank``, ``alpha``, ``use_rslora`` and ``dropout`` that all of the model's LoRA layers share.

    An adapter file (ours and PEFT's) records one value of each for every layer, so a model whose layers
    disagree (say, one layer re-wrapped by hand with another alpha) cannot be saved truthfully: writing the
    first layer's values for all would silently change the others' scaling when loaded. That is an error
    naming the groups of layers."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to save; wrap it with replace_linear_with_lora first")
    groups: dict[tuple, list[str]] = {}
    for name, m in layers.items():
        groups.setdefault(tuple(m.lora.hparams().items()), []).append(name)
    if len(groups) > 1:
        desc = "; ".join(f"{dict(k)} in {len(v)} layer(s), e.g. {v[0]!r}" for k, v in groups.items())
        raise ValueError(f"an adapter records one rank, alpha, scaling rule and dropout for all its layers, but this "
                         f"model's LoRA layers differ: {desc}. Give them the same settings (e.g. set layer.lora.alpha) "
                         "or wrap the base model again with one replace_linear_with_lora call.")
    return dict(next(iter(groups)))


