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

import contextlib
import math
import numbers
import warnings

import torch
from torch import nn

__all__ = ["LoRALayer", "LORA_INITS", "LinearWithLoRA"]


def check_rank(rank) -> None:
    """A rank is a positive int (any integer type; ``True`` is not taken for 1): ``TypeError`` or ``ValueError``
    with the fix in the message."""
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"rank must be a positive int, got {rank!r} ({type(rank).__name__}); "
                        "use e.g. rank=8 or rank=16")
    if rank <= 0:
        raise ValueError(f"rank must be a positive int, got {rank}; use e.g. rank=8 or rank=16")


def check_materialized(layer: nn.Module, wrapper: str, name: str | None = None) -> None:
    """A lazy layer (``nn.LazyLinear``, ``nn.LazyConv2d``) does not know its input size until its first batch, so
    LoRA cannot size ``A`` for it yet: an error saying so, instead of a ZeroDivisionError from a zero width."""
    if isinstance(layer, nn.modules.lazy.LazyModuleMixin) and layer.has_uninitialized_params():
        raise TypeError(f"{wrapper} cannot wrap {f'{name!r}, ' if name else ''}a {type(layer).__name__}: its input "
                        "size is not known until it has seen a batch. Run one batch through the model first (the "
                        f"layer then becomes a plain {type(layer).__name__.removeprefix('Lazy')}), or build it with "
                        "its sizes, then add LoRA")


def check_hparams(rank, alpha, dropout) -> None:
    """Stop a bad rank, alpha or dropout at once, with the fix in the message: otherwise it shows up much
    later as a shape error deep inside a matmul, or as NaN outputs. Any integer type is a rank and any
    real number an alpha (``numbers.Integral``/``numbers.Real``), so NumPy numbers such as the values of
    ``np.arange`` in a sweep work too; ``True`` is not taken for 1."""
    check_rank(rank)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}; a common choice is alpha=rank "
                         "(scaling 1) or alpha=2*rank")
    if not isinstance(dropout, numbers.Real) or not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}; use 0.0 to switch it off")


def plain_number(x):
    """A NumPy (or other) number as a Python int or float, so it prints and saves to JSON like one."""
    return int(x) if isinstance(x, numbers.Integral) else float(x)


LORA_INITS = ("peft", "textbook")


def check_init(init) -> None:
    if init not in LORA_INITS:
        raise ValueError(f"init must be one of {LORA_INITS}, got {init!r}: 'peft' draws A like the LoRA paper's "
                         "code and PEFT (bound 1/sqrt(in_dim)), 'textbook' like the textbook code (bound 1/sqrt(rank))")


def lora_scaling(rank: int, alpha: float, use_rslora: bool = False) -> float:
    """The factor the low-rank update is multiplied by: alpha/rank (LoRA, PEFT) or alpha/sqrt(rank) (rsLoRA).
    A rank of 0 or below is an error naming it (it was a ZeroDivisionError, or a negative scaling)."""
    check_rank(rank)
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
        check_hparams(rank, alpha, dropout)
        check_init(init)
        rank, alpha, dropout = int(rank), plain_number(alpha), float(dropout)
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
        self.alpha = plain_number(round(alpha) if float(alpha).is_integer() else alpha)

    @property
    def dropout_p(self) -> float:
        """The dropout probability on the LoRA path (0.0 when it is switched off)."""
        return float(self.dropout.p) if isinstance(self.dropout, nn.Dropout) else 0.0

    def hparams(self) -> dict:
        """What an adapter file records about this layer: ``rank``, ``alpha``, ``use_rslora``, ``dropout``."""
        return {"rank": self.rank, "alpha": self.alpha, "use_rslora": self.use_rslora, "dropout": self.dropout_p}

    def set_hparams(self, *, alpha: float, use_rslora: bool, dropout: float) -> None:
        """Take over an adapter's alpha, scaling rule and dropout (the rank is fixed by the shapes of A and B)."""
        check_hparams(self.rank, alpha, dropout)
        self.alpha, self.use_rslora = plain_number(alpha), bool(use_rslora)
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


def on_device_of(weight: torch.Tensor):
    """Build new tensors where ``weight`` lives when that is the meta device (a model counted, not allocated):
    LoRA's A and B are then never allocated in memory, whatever the rank. Elsewhere it changes nothing (the
    wrapper moves A and B to the base layer's device and dtype)."""
    return torch.device("meta") if weight.device.type == "meta" else contextlib.nullcontext()


class LoRAWrapper(nn.Module):
    """What every LoRA wrapper shares: a base layer, its :class:`LoRALayer`-like ``lora``, and exact merge/unmerge.

    A wrapped layer computes ``base(x) + lora(x)``. The two wrappers (:class:`LinearWithLoRA`,
    :class:`lora_lab.lora.Conv2dWithLoRA`) differ only in the base layer they hold (``linear`` or ``conv``, the
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


class LinearWithLoRA(LoRAWrapper):
    """A frozen-able ``nn.Linear`` plus a :class:`LoRALayer`: ``linear(x) + lora(x)``.

    ``merge()`` folds the update into ``linear.weight`` (no extra cost at inference);
    ``unmerge()`` takes it back out so training can continue. Merging twice is a no-op.
    A merged layer is for inference only: a backward pass through it in training mode, with
    ``A``/``B`` trainable, raises, because the merged forward gives ``A`` and ``B`` no gradient and
    training would silently learn nothing. (The forward pass itself still works in any mode.)
    The merge and unmerge rules (exact in fp16/bf16) are :class:`LoRAWrapper`'s, shared with Conv2d.
    """

    _base_attr = "linear"

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, *,
                 dropout: float = 0.0, use_rslora: bool = False, init: str = "peft"):
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LinearWithLoRA wraps an nn.Linear, got {type(linear).__name__}")
        check_materialized(linear, "LinearWithLoRA")
        with on_device_of(linear.weight):
            lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha, dropout=dropout,
                             use_rslora=use_rslora, init=init)
        super().__init__(linear, lora)

    @staticmethod
    def lora_shapes(linear: nn.Linear, rank: int) -> dict[str, tuple[int, ...]]:
        """The shapes of ``lora.A`` and ``lora.B`` for this layer and rank (what an adapter file must hold)."""
        return {"A": (linear.in_features, rank), "B": (rank, linear.out_features)}

    @staticmethod
    def _delta(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
        """``scaling * (A @ B)`` transposed to ``nn.Linear.weight``'s ``(out_dim, in_dim)``."""
        return (A @ B).T * scaling
