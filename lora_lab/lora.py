"""LoRA: low-rank adaptation of linear layers.

The whole idea in one line: a frozen linear layer ``W x + b`` gets a trainable
low-rank detour, so it computes

    y = W x + b + scaling * (x @ A @ B)          A: (in_dim, rank), B: (rank, out_dim)

Only ``A`` and ``B`` are trained. Because ``B`` starts at zero, a freshly wrapped
model computes exactly what the base model computed; training then moves ``A @ B``
away from zero. ``rank * (in_dim + out_dim)`` numbers replace ``in_dim * out_dim``.

The names and signatures below are the ones of the well-known code the course starts
from (``LoRALayer(in_dim, out_dim, rank, alpha)``, ``LinearWithLoRA(linear, rank, alpha)``,
``replace_linear_with_lora(model, rank, alpha)``). Two things differ on purpose:

* **Scaling.** That code (as printed, and in its chapter-6 bonus script) multiplies the
  update by the raw ``alpha``; its appendix-E notebook has used ``alpha / rank`` since
  September 2025. The LoRA paper (Hu et al., 2021, section 4.1), loralib and PEFT scale by
  ``alpha / rank``; ``use_rslora=True`` uses ``alpha / sqrt(rank)`` (rank-stabilised LoRA,
  Kalajdzievski 2023). How big a step is depends on the rule *and* on A's init (below):
  Adam's first step moves every entry of ``B`` by about the learning rate, so the first
  update grows roughly like ``scaling * spread(A) * sqrt(rank)``. Measured in notebook 2
  (one Adam step, lr 1e-3, alpha 16, a 256 x 256 layer, ranks 1 to 256): with the default
  init, ``alpha / rank`` shrinks the first update like ``1/sqrt(rank)`` (0.145 -> 0.012),
  rsLoRA keeps it flat (0.145 to 0.188) and raw ``alpha`` grows it like ``sqrt(rank)``
  (0.145 -> 3.016). With ``init="textbook"`` raw ``alpha`` is the roughly flat one
  (2.324 -> 3.016), ``alpha / rank`` shrinks like ``1/rank`` and rsLoRA like ``1/sqrt(rank)``.
  With ``rank == alpha`` (a common choice, 16/16) our scaling is 1 while raw ``alpha`` is 16.

* **Initialisation of A.** ``A`` is stored ``(in_dim, rank)``, as in that code, but by
  default it is drawn like the LoRA paper's reference code (loralib) and PEFT draw it:
  ``U(-1/sqrt(in_dim), 1/sqrt(in_dim))``, i.e. Kaiming-uniform with fan-in ``in_dim``, the
  init ``nn.Linear(in_dim, rank)`` would give. ``init="textbook"`` keeps that code's
  ``kaiming_uniform_(A, a=sqrt(5))`` on the ``(in_dim, rank)`` tensor, whose fan-in PyTorch
  takes to be ``rank``: ``U(-1/sqrt(rank), 1/sqrt(rank))``, wider at small ranks and so a
  larger first update. ``B = 0`` keeps the start exact either way; notebook 2 measures what
  each init does to the first update under each scaling rule.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import numbers
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .files import DataIntegrityError, atomic_write

__all__ = [
    "LoRALayer",
    "LORA_INITS",
    "LinearWithLoRA",
    "replace_linear_with_lora",
    "lora_layers",
    "merge_lora",
    "unmerge_lora",
    "mark_only_lora_trainable",
    "mark_trainable",
    "ParamCount",
    "count_parameters",
    "lora_parameter_count",
    "lora_state_dict",
    "save_adapter",
    "load_adapter",
    "read_adapter",
    "check_adapter_fits",
    "AdapterContents",
    "ADAPTER_FORMATS",
    "shared_hparams",
    "selects",
    "lora_parameter_names",
    "AdapterMismatchError",
    "TARGET_PRESETS",
    "DEFAULT_EXCLUDE",
]

# Which Linear layers to wrap. Patterns are shell-style globs over the module's full
# name (as in ``model.named_modules()``); they cover our GPT-2, Hugging Face GPT-2 and
# BERT-style models (MiniLM) alike.
ATTENTION_PATTERNS = ("*attn*", "*attention*")
MLP_PATTERNS = ("*mlp*", "*intermediate*", "*.output.dense")
TARGET_PRESETS = ("all", "attention", "mlp")
# Output heads are skipped by default: a *new* classification head should be trained in
# full (it is tiny and starts random), and an LM head is tied to the token embedding.
DEFAULT_EXCLUDE = ("lm_head", "classifier", "score", "out_head")


class AdapterMismatchError(ValueError):
    """An adapter file does not fit the model it is being loaded onto."""


def _check_hparams(rank, alpha, dropout) -> None:
    """Stop a bad rank, alpha or dropout at once, with the fix in the message: otherwise it shows up much
    later as a shape error deep inside a matmul, or as NaN outputs. Any integer type is a rank and any
    real number an alpha (``numbers.Integral``/``numbers.Real``), so NumPy numbers such as the values of
    ``np.arange`` in a sweep work too; ``True`` is not taken for 1."""
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"rank must be a positive int, got {rank!r} ({type(rank).__name__}); "
                        "use e.g. rank=8 or rank=16")
    if rank <= 0:
        raise ValueError(f"rank must be a positive int, got {rank}; use e.g. rank=8 or rank=16")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}; a common choice is alpha=rank "
                         "(scaling 1) or alpha=2*rank")
    if not isinstance(dropout, numbers.Real) or not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}; use 0.0 to switch it off")


def _plain(x):
    """A NumPy (or other) number as a Python int or float, so it prints and saves to JSON like one."""
    return int(x) if isinstance(x, numbers.Integral) else float(x)


LORA_INITS = ("peft", "textbook")


def _check_init(init) -> None:
    if init not in LORA_INITS:
        raise ValueError(f"init must be one of {LORA_INITS}, got {init!r}: 'peft' draws A like the LoRA paper's "
                         "code and PEFT (bound 1/sqrt(in_dim)), 'textbook' like the textbook code (bound 1/sqrt(rank))")


def lora_scaling(rank: int, alpha: float, use_rslora: bool = False) -> float:
    """The factor the low-rank update is multiplied by: alpha/rank (LoRA, PEFT) or alpha/sqrt(rank) (rsLoRA)."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


class LoRALayer(nn.Module):
    """The low-rank update ``scaling * dropout(x) @ A @ B`` on its own.

    Args:
        in_dim, out_dim: the shape of the linear layer it adapts.
        rank: the inner dimension r of ``A @ B``; the update has rank at most r.
        alpha: the strength of the update; the update is multiplied by ``alpha / rank``
            (or ``alpha / sqrt(rank)`` with ``use_rslora``). See the module docstring for
            why this differs from raw ``alpha``.
        dropout: dropout on the input of the LoRA path only (the frozen path sees ``x``).
        init: how ``A`` starts. ``"peft"`` (default): ``U(±1/sqrt(in_dim))``, as in the LoRA paper's
            code and PEFT. ``"textbook"``: ``kaiming_uniform_(A, a=sqrt(5))`` on the ``(in_dim, rank)``
            tensor, i.e. ``U(±1/sqrt(rank))``, as in the textbook code.
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, *,
                 dropout: float = 0.0, use_rslora: bool = False, init: str = "peft"):
        super().__init__()
        _check_hparams(rank, alpha, dropout)
        _check_init(init)
        rank, alpha, dropout = int(rank), _plain(alpha), float(dropout)
        if rank > min(in_dim, out_dim):
            warnings.warn(f"rank={rank} is larger than this layer's smaller side ({in_dim} in, {out_dim} out): "
                          f"A @ B cannot have a rank above {min(in_dim, out_dim)}, so the extra rank only adds "
                          f"parameters and compute. Use rank <= {min(in_dim, out_dim)} here.", UserWarning,
                          stacklevel=2)
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        if init == "peft":  # fan-in in_dim: what nn.Linear(in_dim, rank).weight.T would start as
            bound = 1 / math.sqrt(in_dim)
            nn.init.uniform_(self.A, -bound, bound)
        else:  # PyTorch reads the fan-in of an (in_dim, rank) tensor as rank
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.init = init
        self.B = nn.Parameter(torch.zeros(rank, out_dim))  # zero => the update starts at exactly 0
        self.rank = rank
        self.alpha = alpha
        self.use_rslora = bool(use_rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def scaling(self) -> float:
        """``alpha / rank`` (or ``alpha / sqrt(rank)`` with ``use_rslora``), computed from them on every read, so
        it can never disagree with the rank, alpha and rule that an adapter file records.

        Setting it (notebook 2 does, to mimic the textbook's raw ``alpha``) sets ``alpha`` to the value that gives
        this scaling under the layer's rule: ``alpha = scaling * rank`` (``* sqrt(rank)`` for rsLoRA)."""
        return lora_scaling(self.rank, self.alpha, self.use_rslora)

    @scaling.setter
    def scaling(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"scaling must be a positive number, got {value!r}")
        alpha = value * (math.sqrt(self.rank) if self.use_rslora else self.rank)
        self.alpha = _plain(round(alpha) if float(alpha).is_integer() else alpha)

    @property
    def dropout_p(self) -> float:
        """The dropout probability on the LoRA path (0.0 when it is switched off)."""
        return float(self.dropout.p) if isinstance(self.dropout, nn.Dropout) else 0.0

    def hparams(self) -> dict:
        """What an adapter file records about this layer: ``rank``, ``alpha``, ``use_rslora``, ``dropout``."""
        return {"rank": self.rank, "alpha": self.alpha, "use_rslora": self.use_rslora, "dropout": self.dropout_p}

    def set_hparams(self, *, alpha: float, use_rslora: bool, dropout: float) -> None:
        """Take over an adapter's alpha, scaling rule and dropout (the rank is fixed by the shapes of A and B)."""
        _check_hparams(self.rank, alpha, dropout)
        self.alpha, self.use_rslora = _plain(alpha), bool(use_rslora)
        if dropout != self.dropout_p:
            self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.dropout(x) @ self.A @ self.B) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update as a weight matrix shaped like ``nn.Linear.weight``: ``(out_dim, in_dim)``."""
        return (self.A @ self.B).T * self.scaling

    def extra_repr(self) -> str:
        rule = "alpha/sqrt(rank)" if self.use_rslora else "alpha/rank"
        return (f"in_dim={self.A.shape[0]}, out_dim={self.B.shape[1]}, rank={self.rank}, "
                f"alpha={self.alpha}, scaling={self.scaling:g} ({rule})")


_MERGED_TRAINING = (
    "a merged LoRA layer was trained: its update is folded into linear.weight, so A and B get no gradient "
    "and nothing would be learned. Call unmerge_lora(model) before training (merge only for inference, "
    "in model.eval() or under torch.no_grad()).")


class _NoGradThroughMerged(torch.autograd.Function):
    """Identity in the forward pass; the backward pass raises. Tied to ``A`` so that it is part of the
    graph (and so raises) even when nothing else before the layer needs a gradient."""

    @staticmethod
    def forward(ctx, out, A):
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(_MERGED_TRAINING)


class _LoRAWrapper(nn.Module):
    """What every LoRA wrapper shares: a base layer, its :class:`LoRALayer`-like ``lora``, and exact merge/unmerge.

    A wrapped layer computes ``base(x) + lora(x)``. The two wrappers (:class:`LinearWithLoRA`,
    :class:`lora_lab.conv.Conv2dWithLoRA`) differ only in the base layer they hold (``linear`` or ``conv``, the
    attribute named by ``_base_attr``, kept so that state-dict keys stay ``linear.weight`` / ``conv.weight``) and
    in how ``A`` and ``B`` become a weight-shaped update (:meth:`_delta`). Everything else lives here, once, so
    that the merge rules below cannot drift apart between the two: where the LoRA module is placed, the merge
    bookkeeping, the guard against training through a merged layer.
    """

    _base_attr: str  # "linear" or "conv": the attribute that holds the wrapped layer

    def __init__(self, base: nn.Module, lora: nn.Module):
        super().__init__()
        setattr(self, self._base_attr, base)
        self.lora = lora
        # A and B live where the frozen weight lives, in its dtype, so that base(x) + lora(x) needs no
        # conversion; a model built on the meta device (no memory yet) gets meta A and B too
        w = base.weight
        if w.device.type != "meta":
            self.lora.to(device=w.device, dtype=w.dtype if w.dtype.is_floating_point else None)
        else:
            self.lora.to(device="meta")
        self.merged = False
        # what unmerge() needs to give back the weight exactly (see merge); not saved in state_dict
        self.register_buffer("_weight_before_merge", None, persistent=False)
        self.register_buffer("_merged_A", None, persistent=False)
        self.register_buffer("_merged_B", None, persistent=False)
        self._merged_scaling = None

    @property
    def _base(self) -> nn.Module:
        return getattr(self, self._base_attr)

    @staticmethod
    def _delta(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
        """``scaling * B A`` shaped like the base layer's weight (each wrapper says how)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self._base
        if self.merged:
            out = base(x)
            if self.training and torch.is_grad_enabled() and (self.lora.A.requires_grad or self.lora.B.requires_grad):
                out = _NoGradThroughMerged.apply(out, self.lora.A if self.lora.A.requires_grad else self.lora.B)
            return out
        return base(x) + self.lora(x)

    @staticmethod
    def _wide(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)

    @torch.no_grad()
    def merge(self):
        """Fold the update ``scaling * B A`` into the frozen weight. Idempotent.

        Why the bookkeeping: ``(W + d) - d`` is not exactly ``W`` in floating point. In fp16/bf16 one
        merge/unmerge cycle is off by about one unit in the last place, and by more when ``B`` changed
        in between; repeated cycles would slowly damage the frozen weights. So the update is added in
        fp32 and rounded once, and to make :meth:`unmerge` exact:

        * fp16/bf16 (and other narrow dtypes): the original weight is kept aside while merged and
          restored bit for bit (this costs one copy of the weight until you unmerge);
        * fp32/fp64: only ``A``, ``B`` and the scaling that were merged are kept (``rank * (in + out)``
          numbers); unmerge subtracts exactly that update (error: a rounding step of the weight's own
          precision), even if ``A`` or ``B`` changed since.

        Do not edit the wrapped weight (``linear.weight``, ``conv.weight``) while the layer is merged: in
        fp16/bf16, unmerge puts back the weight kept aside, and the edit would be lost.
        """
        if not self.merged:
            w, lora = self._base.weight, self.lora
            A, B = lora.A.detach(), lora.B.detach()
            if w.dtype in (torch.float32, torch.float64):
                self._merged_A, self._merged_B, self._merged_scaling = A.clone(), B.clone(), lora.scaling
            else:
                self._weight_before_merge = w.detach().clone()
            delta = self._delta(self._wide(A), self._wide(B), lora.scaling)
            w.copy_((self._wide(w) + delta).to(w.dtype))
            self.merged = True
        return self

    @torch.no_grad()
    def unmerge(self):
        """Take the update back out of the frozen weight, exactly as it went in (see :meth:`merge`). Idempotent."""
        if self.merged:
            w = self._base.weight
            if self._weight_before_merge is not None:
                w.copy_(self._weight_before_merge)
            else:
                delta = self._delta(self._wide(self._merged_A), self._wide(self._merged_B), self._merged_scaling)
                w.copy_((self._wide(w) - delta).to(w.dtype))
            self._weight_before_merge = self._merged_A = self._merged_B = self._merged_scaling = None
            self.merged = False
        return self

    def extra_repr(self) -> str:
        return f"merged={self.merged}"


class LinearWithLoRA(_LoRAWrapper):
    """A frozen-able ``nn.Linear`` plus a :class:`LoRALayer`: ``linear(x) + lora(x)``.

    ``merge()`` folds the update into ``linear.weight`` (no extra cost at inference);
    ``unmerge()`` takes it back out so training can continue. Merging twice is a no-op.
    A merged layer is for inference only: a backward pass through it in training mode, with
    ``A``/``B`` trainable, raises, because the merged forward gives ``A`` and ``B`` no gradient and
    training would silently learn nothing. (The forward pass itself still works in any mode.)
    The merge and unmerge rules (exact in fp16/bf16) are :class:`_LoRAWrapper`'s, shared with Conv2d.
    """

    _base_attr = "linear"

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, *,
                 dropout: float = 0.0, use_rslora: bool = False, init: str = "peft"):
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LinearWithLoRA wraps an nn.Linear, got {type(linear).__name__}")
        super().__init__(linear, LoRALayer(linear.in_features, linear.out_features, rank, alpha,
                                           dropout=dropout, use_rslora=use_rslora, init=init))

    @staticmethod
    def lora_shapes(linear: nn.Linear, rank: int) -> dict[str, tuple[int, ...]]:
        """The shapes of ``lora.A`` and ``lora.B`` for this layer and rank (what an adapter file must hold)."""
        return {"A": (linear.in_features, rank), "B": (rank, linear.out_features)}

    @staticmethod
    def _delta(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
        """``scaling * (A @ B)`` transposed to ``nn.Linear.weight``'s ``(out_dim, in_dim)``."""
        return (A @ B).T * scaling


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


def _wrap_layers(model: nn.Module, wrapper: type, base_type: type, rank: int, alpha: float, *, target, exclude,
                 dropout: float, use_rslora: bool, init: str, check=None) -> tuple[list[str], list[str]]:
    """Wrap every ``base_type`` layer of ``model`` that ``target``/``exclude`` select in ``wrapper``, in place.

    The one implementation behind :func:`replace_linear_with_lora` and
    :func:`lora_lab.conv.replace_conv2d_with_lora`, in three steps so that an error leaves the model exactly as
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
    _check_hparams(rank, alpha, dropout)
    _check_init(init)
    wrapped, existing = _wrap_layers(model, LinearWithLoRA, nn.Linear, rank, alpha, target=target, exclude=exclude,
                                     dropout=dropout, use_rslora=use_rslora, init=init)
    if not wrapped and not existing:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        hint = (f"its Linear layers are {linears[:6]}{' ...' if len(linears) > 6 else ''}; "
                f"check target={target!r} and exclude={tuple(exclude)!r}") if linears else \
            "it has no nn.Linear layer at all (LoRA here adapts nn.Linear layers)"
        raise ValueError(f"replace_linear_with_lora found no layer to wrap in {type(model).__name__}: {hint}")
    return model


def _lora_wrappers() -> dict[type, type]:
    """Base layer type -> its LoRA wrapper. Everything generic below (finding, merging, freezing, saving and
    loading LoRA layers) works on any of them, so a model may mix Linear and Conv2d LoRA layers."""
    from .conv import Conv2dWithLoRA  # imported here, not at the top: conv.py builds on this module

    return {nn.Linear: LinearWithLoRA, nn.Conv2d: Conv2dWithLoRA}


def _wrapper_for(module: nn.Module):
    """The LoRA wrapper class for this base layer, or None when LoRA here cannot adapt it."""
    return next((w for base, w in _lora_wrappers().items() if isinstance(module, base)), None)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All LoRA-wrapped layers of a model (:class:`LinearWithLoRA`, :class:`lora_lab.conv.Conv2dWithLoRA`), by name."""
    wrappers = tuple(_lora_wrappers().values())
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
    :func:`lora_lab.gpt2.linear_shapes`.
    """
    return sum(rank * (i + o) for i, o in shapes)


def lora_state_dict(model: nn.Module, extra: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The LoRA weights and the ``extra`` modules' (names or globs, as in :func:`mark_trainable`, see
    :func:`selects`; e.g. ``"classifier"``): what an adapter file holds."""
    extra = list(extra) if not isinstance(extra, str) else extra
    lora_names = lora_parameter_names(model)
    return {name: t.detach() for name, t in model.state_dict().items() if name in lora_names or selects(name, extra)}


ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FORMAT = "lora_lab.adapter/1"
SCALING_RULES = {"alpha/rank": False, "alpha/sqrt(rank)": True}  # rule -> use_rslora
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _base_name(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "name", None) or getattr(cfg, "_name_or_path", None) or None


def _base_weights(model: nn.Module) -> tuple[str | None, str | None]:
    """(revision, sha256) of the pretrained weights the model was loaded from, when known
    (:func:`lora_lab.gpt2.load_pretrained` records them in ``model.config``)."""
    cfg = getattr(model, "config", None)
    return getattr(cfg, "revision", None), getattr(cfg, "weights_sha256", None)


def _pending(path: Path, sha: str) -> Path:
    """Where save_adapter puts new weights before it commits them: a hidden file named by their sha256."""
    return path / f".adapter.{sha}.safetensors"


def _remove_leftovers(path: Path, keep: set[str]) -> None:
    """Delete what interrupted saves left in an adapter folder (hidden weights and ``.tmp`` files)."""
    for f in path.iterdir():
        if f.name in keep or not f.name.startswith("."):
            continue
        if f.name.endswith(".tmp") or (f.name.startswith(".adapter.") and f.name.endswith(".safetensors")):
            try:
                f.unlink()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass


ADAPTER_FORMATS = ("lora_lab", "peft")


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


def save_adapter(model: nn.Module, path, *, format: str = "lora_lab", extra: Iterable[str] = ("classifier",),
                 base_model: str | None = None, task: str | None = None) -> Path:
    """Write the adapter (LoRA weights + extra modules such as the new head) to a folder.

    ``format="lora_lab"`` (default): ``adapter.safetensors`` and ``adapter_config.json`` (rank, alpha, scaling
    rule, dropout, wrapped layers, base model, the exact base weights when known, the weights' sha256), read
    back by :func:`load_adapter`.

    ``format="peft"``: the folder Hugging Face PEFT writes, ``adapter_model.safetensors`` and its
    ``adapter_config.json``, which ``peft.PeftModel.from_pretrained`` loads onto ``transformers``' GPT-2
    (or BERT for the MiniLM track); see :func:`lora_lab.interop.save_peft_adapter` for what maps onto what.

    Every LoRA layer must share one rank, alpha, scaling rule and dropout (:func:`shared_hparams`); a model
    whose layers differ is an error, not a file that records the first layer's values for all.
    ``extra``: module names or globs (see :func:`selects`), the same rule :func:`mark_only_lora_trainable` uses.

    The folder is updated as one step. Overwriting an adapter with two separate file writes is not
    safe: a ``kill -9`` or a full disk between them would leave new weights beside the old config
    (the old adapter destroyed, the new one not loadable). So:

    1. the weights are serialised and hashed in memory;
    2. they are written (atomically) to a hidden file named by that hash, ``.adapter.<sha256>.safetensors``;
       the adapter in the folder is still the old one;
    3. the config, which names that hash, is written atomically. **This is the commit point**: before
       it the folder holds the old adapter, after it the new one;
    4. the hidden file is renamed to ``adapter.safetensors`` and leftovers of interrupted saves are removed.

    If a crash falls between 3 and 4, :func:`load_adapter` finds the committed weights by their hash
    and finishes the move. One writer per folder at a time.
    """
    from safetensors.torch import save as serialize

    if format not in ADAPTER_FORMATS:
        raise ValueError(f"format must be one of {ADAPTER_FORMATS}, got {format!r}: 'lora_lab' is read by "
                         "load_adapter, 'peft' by Hugging Face PEFT (and by load_adapter)")
    if format == "peft":
        from .interop import save_peft_adapter

        return save_peft_adapter(model, path, extra=extra, base_model=base_model)
    hp = shared_hparams(model)
    layers = lora_layers(model)
    if any(m.merged for m in layers.values()):
        raise ValueError("the model's LoRA layers are merged; call unmerge_lora(model) before save_adapter")
    path = Path(path)
    tensors = {k: v.contiguous().cpu() for k, v in lora_state_dict(model, extra).items()}
    data = serialize(tensors, metadata={"format": "pt"})
    sha = hashlib.sha256(data).hexdigest()
    revision, base_sha = _base_weights(model)
    config = {
        "format": ADAPTER_FORMAT,
        "base_model": base_model or _base_name(model),
        "base_revision": revision,
        "base_weights_sha256": base_sha,
        "task": task,
        "rank": hp["rank"],
        "alpha": hp["alpha"],
        "scaling_rule": "alpha/sqrt(rank)" if hp["use_rslora"] else "alpha/rank",
        "dropout": hp["dropout"],
        "layers": sorted(layers),
        "extra_modules": sorted(set([extra] if isinstance(extra, str) else extra)),
        "num_tensors": len(tensors),
        "sha256": sha,
    }
    path.mkdir(parents=True, exist_ok=True)
    pending = _pending(path, sha)
    atomic_write(pending, lambda tmp: Path(tmp).write_bytes(data))  # 2.
    try:
        atomic_write(path / ADAPTER_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))  # 3.
    except BaseException:
        pending.unlink(missing_ok=True)  # not committed: the old adapter stays as it was
        raise
    os.replace(pending, path / ADAPTER_WEIGHTS)  # 4.
    _remove_leftovers(path, keep={ADAPTER_WEIGHTS, ADAPTER_CONFIG})
    return path


def _validated_config(cfg, cfg_path: Path) -> dict:
    """Check every field load_adapter relies on, before the model is touched."""
    where = f"{cfg_path}"
    if not isinstance(cfg, dict):
        raise ValueError(f"{where} should hold a JSON object, got {type(cfg).__name__}; save the adapter again")
    required = ("rank", "alpha", "scaling_rule", "layers", "sha256")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ValueError(f"{where} lacks {missing}: it was not written by save_adapter, or was edited. "
                         "Save the adapter again.")
    if cfg.get("format", ADAPTER_FORMAT) != ADAPTER_FORMAT:
        raise ValueError(f"{where} has format {cfg['format']!r}; this version of lora_lab reads {ADAPTER_FORMAT!r}")
    try:
        _check_hparams(cfg["rank"], cfg["alpha"], cfg.get("dropout", 0.0))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    if cfg["scaling_rule"] not in SCALING_RULES:
        raise ValueError(f"{where}: scaling_rule must be one of {sorted(SCALING_RULES)}, got {cfg['scaling_rule']!r}")
    layers = cfg["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(n, str) and n for n in layers):
        raise ValueError(f"{where}: layers must be a non-empty list of module names, got {layers!r}")
    globs = [n for n in layers if any(c in n for c in "*?[]")]
    if globs:
        raise ValueError(f"{where}: layers must be exact module names (as in model.named_modules()), not "
                         f"patterns: {globs[:5]}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"{where}: layers lists some names twice")
    extra = cfg.get("extra_modules", [])
    if not isinstance(extra, list) or not all(isinstance(n, str) for n in extra):
        raise ValueError(f"{where}: extra_modules must be a list of module names, got {extra!r}")
    if not isinstance(cfg["sha256"], str) or not _SHA256.fullmatch(cfg["sha256"]):
        raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits, got {cfg['sha256']!r}")
    for key in ("base_model", "base_revision", "base_weights_sha256", "task"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise ValueError(f"{where}: {key} must be a string or null, got {cfg[key]!r}")
    return {**cfg, "rank": int(cfg["rank"]), "alpha": _plain(cfg["alpha"]),
            "dropout": float(cfg.get("dropout", 0.0)), "extra_modules": extra}


def _read_adapter(path: Path) -> tuple[dict, bytes]:
    """The folder's validated config and the weights' bytes (sha256 checked). Touches no model."""
    cfg_path, weights = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not cfg_path.is_file() or not (weights.is_file() or any(path.glob(".adapter.*.safetensors"))):
        raise FileNotFoundError(f"{path} is not an adapter folder: expected {ADAPTER_CONFIG} and "
                                f"{ADAPTER_WEIGHTS} in it (write one with save_adapter)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e}): the adapter's config is damaged. "
                         "Save the adapter again.") from None
    cfg = _validated_config(cfg, cfg_path)
    data = weights.read_bytes() if weights.is_file() else b""
    actual = hashlib.sha256(data).hexdigest()
    if actual != cfg["sha256"]:
        pending = _pending(path, cfg["sha256"])
        # a save that was interrupted after its commit point: the committed weights wait under their hash
        if pending.is_file() and hashlib.sha256(blob := pending.read_bytes()).hexdigest() == cfg["sha256"]:
            data = blob
            try:
                os.replace(pending, weights)  # finish that save
            except OSError:
                pass  # a read-only folder: loading works all the same
        else:
            # the package's one checksum error (lora_lab.files.verify_sha256 raises it too). verify_sha256 itself
            # is not called: it hashes a path, and these bytes, already read, are the ones that get loaded
            raise DataIntegrityError(f"adapter weights {weights} are corrupt or were changed: sha256 {actual}, "
                                     f"expected {cfg['sha256']} from its config. Save the adapter again.")
    return cfg, data


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


def _check_finite(tensors: dict, path: Path) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"adapter {path} holds NaN or infinite values in {bad[:5]}: it was saved from a model "
                         "whose training diverged. Train again (lower the learning rate) and save again.")


def read_adapter(path) -> AdapterContents:
    """Read and verify a folder written by :func:`save_adapter` (``format="lora_lab"``): the config's fields,
    the weights' sha256 (finishing a save interrupted after its commit point), that the weights parse and
    are finite. Touches no model; raises ``ValueError`` (or ``FileNotFoundError``) naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load as deserialize

    path = Path(path)
    cfg, data = _read_adapter(path)
    try:
        tensors = deserialize(data)
    except (SafetensorError, ValueError) as e:
        raise ValueError(f"{path / ADAPTER_WEIGHTS} is not a readable safetensors file ({e})") from None
    _check_finite(tensors, path)
    hparams = {"rank": cfg["rank"], "alpha": cfg["alpha"], "use_rslora": SCALING_RULES[cfg["scaling_rule"]],
               "dropout": cfg["dropout"]}
    return AdapterContents(path=path, config=cfg, layers=list(cfg["layers"]), hparams=hparams, tensors=tensors,
                           base_model=cfg.get("base_model"), base_revision=cfg.get("base_revision"),
                           base_weights_sha256=cfg.get("base_weights_sha256"))


def _adapter_format(path: Path) -> str:
    """``"peft"`` when the folder's config was written by PEFT (it has ``peft_type``), else ``"lora_lab"``
    (whose reader then reports anything that is wrong with the folder)."""
    try:
        cfg = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "lora_lab"
    return "peft" if isinstance(cfg, dict) and "peft_type" in cfg else "lora_lab"


def check_adapter_fits(model: nn.Module, adapter: AdapterContents, *, base_model: str | None = None) -> list[str]:
    """Check that ``adapter`` fits ``model``, without touching it; returns the layers that still need wrapping
    (empty when the model is already wrapped at exactly the adapter's layers: switching tasks).

    Raises :class:`AdapterMismatchError` naming the problem: another base model, other layers, or a tensor
    whose name or shape the model does not have. Warns when the adapter records the exact base weights it was
    trained on and this model's differ."""
    path = adapter.path
    model_base = base_model or _base_name(model)
    if adapter.base_model and model_base and adapter.base_model != model_base:
        raise AdapterMismatchError(f"adapter {path} was trained on base model {adapter.base_model!r}, "
                                   f"but this model is {model_base!r}; load it onto {adapter.base_model!r}")
    revision, model_sha = _base_weights(model)
    if adapter.base_weights_sha256 and model_sha and adapter.base_weights_sha256 != model_sha:
        warnings.warn(f"adapter {path} was trained on base weights with sha256 {adapter.base_weights_sha256} "
                      f"(revision {adapter.base_revision}), but this model's weights have sha256 {model_sha} "
                      f"(revision {revision}). It loads, but its outputs will differ from those measured in "
                      "training; load the same base weights to reproduce them.", UserWarning, stacklevel=3)
    names, rank = adapter.layers, adapter.hparams["rank"]
    layers = lora_layers(model)
    own = model.state_dict()
    if layers:  # already wrapped: the adapter must cover exactly these layers (switching tasks)
        if sorted(layers) != sorted(names):
            missing = sorted(set(names) - set(layers))
            extra_l = sorted(set(layers) - set(names))
            raise AdapterMismatchError(f"adapter {path} does not fit this model's LoRA layers: "
                                       f"in the adapter only: {missing[:5]}, in the model only: {extra_l[:5]}")
        if any(m.merged for m in layers.values()):
            raise ValueError("unmerge_lora(model) before loading another adapter")
        expected = {k: tuple(own[k].shape) for k in lora_parameter_names(model)}
        to_wrap = []
    else:
        modules = dict(model.named_modules())
        not_found = [n for n in names if n not in modules]
        not_linear = [n for n in names if n in modules and _wrapper_for(modules[n]) is None]
        if not_found or not_linear:
            raise AdapterMismatchError(f"adapter {path} does not fit this model: layers not in the model: "
                                       f"{not_found[:5]}; not an nn.Linear or nn.Conv2d: {not_linear[:5]}")
        expected = {}
        for n in names:
            shapes = _wrapper_for(modules[n]).lora_shapes(modules[n], rank)
            expected.update({f"{n}.lora.{k}": shape for k, shape in shapes.items()})
        to_wrap = list(names)
    problems = [f"{k}: missing from the adapter" for k in expected if k not in adapter.tensors]
    for k, v in adapter.tensors.items():
        want = expected.get(k, tuple(own[k].shape) if k in own else None)
        name = f"{k} (file: {adapter.sources[k]})" if k in adapter.sources else k
        if want is None:
            problems.append(f"{name}: not in model")
        elif tuple(v.shape) != want:
            problems.append(f"{name}: adapter {tuple(v.shape)} vs model {want}")
    if problems:
        raise AdapterMismatchError(f"adapter {path} does not fit this model: " + "; ".join(problems[:8]))
    return to_wrap


def _apply_adapter(model: nn.Module, adapter: AdapterContents, to_wrap: list[str]) -> None:
    """Wrap ``to_wrap``, give every LoRA layer the adapter's alpha, rule and dropout, load the tensors; if
    anything fails on the way, undo all of it."""
    hp = adapter.hparams
    modules = dict(model.named_modules())
    layers = lora_layers(model)
    own = model.state_dict()
    before = {k: own[k].clone() for k in adapter.tensors if k in own}
    old = {n: (m.lora.alpha, m.lora.use_rslora, m.lora.dropout) for n, m in layers.items()}
    wrapped = []
    try:
        for n in to_wrap:
            model.set_submodule(n, _wrapper_for(modules[n])(modules[n], hp["rank"], hp["alpha"],
                                                              dropout=hp["dropout"], use_rslora=hp["use_rslora"]))
            wrapped.append(n)
        for m in lora_layers(model).values():
            m.lora.set_hparams(alpha=hp["alpha"], use_rslora=hp["use_rslora"], dropout=hp["dropout"])
        model.load_state_dict(adapter.tensors, strict=False)
    except BaseException:
        for n in wrapped:
            model.set_submodule(n, modules[n])
        for n, (alpha, use_rslora, dropout) in old.items():
            layers[n].lora.alpha, layers[n].lora.use_rslora, layers[n].lora.dropout = alpha, use_rslora, dropout
        model.load_state_dict(before, strict=False)
        raise


def load_adapter(model: nn.Module, path, *, base_model: str | None = None) -> dict:
    """Load an adapter folder onto ``model`` (in place): one written by :func:`save_adapter`, or a LoRA
    adapter written by Hugging Face PEFT (``adapter_model.safetensors``; see
    :func:`lora_lab.interop.read_peft_adapter` for what maps and what is refused).

    A base model that has no LoRA layers yet is wrapped first, with the adapter's rank, alpha, scaling
    rule, dropout and layers (exact module names). Loading a second adapter onto the same wrapped model
    swaps tasks: its alpha, rule and dropout replace the layers' own.

    Three steps, and the model is touched only in the last:

    1. read and verify the folder (:func:`read_adapter`): the config (keys, types, rank and alpha, the
       scaling rule, layer names), the weights' sha256, that every tensor is finite;
    2. check it fits (:func:`check_adapter_fits`): the base model, the layers, every tensor's name and
       shape;
    3. apply it, undoing everything if anything still fails.

    :class:`AdapterMismatchError` when the adapter was made for another base model, other layers, or other
    shapes; ``ValueError`` when the folder is damaged. An adapter that records the exact base weights it was
    trained on (their sha256) warns when loaded onto different weights: it will run, but its outputs will
    not be the ones measured in training. Returns the adapter's config.
    """
    path = Path(path)
    if _adapter_format(path) == "peft":
        from .interop import read_peft_adapter

        adapter = read_peft_adapter(path, model)
    else:
        adapter = read_adapter(path)
    to_wrap = check_adapter_fits(model, adapter, base_model=base_model)
    _apply_adapter(model, adapter, to_wrap)
    return adapter.config
