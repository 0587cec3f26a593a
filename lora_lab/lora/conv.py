"""LoRA for convolutions: ``nn.Conv2d`` gets the same low-rank detour as ``nn.Linear``.

A convolution is a linear layer applied to every patch of the image. Its weight ``(out, in, kh, kw)``
read as a matrix is ``out x (in*kh*kw)``: each row is one filter, flattened, and the layer multiplies
that matrix with every ``in*kh*kw`` patch (``F.unfold`` cuts them out). So LoRA on a convolution is
LoRA on that matrix, ``dW = scaling * B @ A`` with

* ``A``: ``rank x (in*kh*kw)``, stored as a conv kernel ``(rank, in, kh, kw)``. Applied to every patch,
  it *is* a convolution with ``rank`` output channels, the same kernel size, stride and padding as the
  frozen layer: ``A`` carries the spatial kernel.
* ``B``: ``out x rank``, stored as ``(out, rank, 1, 1)``. It mixes the ``rank`` channels into ``out``
  channels at each pixel, on its own, without looking at neighbours: a 1x1 convolution.

``scaling * B(A(x))`` and ``conv(x, dW)`` are the same numbers, and ``dW`` has rank at most ``rank`` in the matrix
view. This is the layout PEFT uses (``lora_A = Conv2d(in, r, kernel, stride, padding)``,
``lora_B = Conv2d(r, out, 1)``), so weights copy across one to one; ``tests/test_conv.py`` checks outputs
against PEFT's Conv2d LoRA. Everything else follows :mod:`lora_lab.lora`: scaling ``alpha/rank`` or rsLoRA's
``alpha/sqrt(rank)``, ``B = 0`` at the start, dropout on the LoRA path only, exact merge/unmerge, and the
generic helpers (``lora_layers``, ``merge_lora``, ``mark_only_lora_trainable``, ``save_adapter``,
``load_adapter``) handle these layers too.

Not supported, with an error saying so: grouped or depthwise convolutions (``groups > 1``), dilation, and
padding modes other than ``"zeros"``. (PEFT builds ``lora_A`` without the base layer's dilation and padding
mode, so its update would not be the merged weight's; rather than copy that, we refuse.)
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layer import LoRALayer, LoRAWrapper, check_hparams, check_init, check_materialized, on_device_of, plain_number
from .targets import DEFAULT_EXCLUDE, wrap_layers

__all__ = ["Conv2dLoRALayer", "Conv2dWithLoRA", "replace_conv2d_with_lora", "conv_lora_parameter_count",
           "check_conv2d_supported"]


def check_conv2d_supported(conv: nn.Module, name: str = "this layer") -> None:
    """Raise if ``conv`` is a Conv2d this LoRA cannot adapt exactly, with what to do instead."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"Conv2dWithLoRA wraps an nn.Conv2d, got {type(conv).__name__} for {name}; "
                        "use LinearWithLoRA for nn.Linear")
    check_materialized(conv, "Conv2dWithLoRA", None if name == "this layer" else name)
    problems = []
    if conv.groups != 1:
        problems.append(f"groups={conv.groups} (grouped/depthwise convolution)")
    if tuple(conv.dilation) != (1, 1):
        problems.append(f"dilation={tuple(conv.dilation)}")
    if conv.padding_mode != "zeros":
        problems.append(f"padding_mode={conv.padding_mode!r}")
    if problems:
        raise ValueError(f"{name} is a Conv2d with {', '.join(problems)}: lora_lab's Conv2d LoRA supports "
                         "groups=1, dilation=1 and zero padding only. Leave this layer out (exclude=[its name]) "
                         "or adapt the layers after it.")


def conv_lora_parameter_count(shapes: Iterable[tuple[int, int, int, int]], rank: int) -> int:
    """Closed form: LoRA on a Conv2d with weight ``(out, in, kh, kw)`` adds ``rank * (in*kh*kw + out)``
    parameters (``A``: ``rank x in*kh*kw``, ``B``: ``out x rank``), the Linear formula on the matrix view."""
    return sum(rank * (i * kh * kw + o) for o, i, kh, kw in shapes)


class Conv2dLoRALayer(nn.Module):
    """The low-rank update of a Conv2d on its own: ``scaling * B(A(dropout(x)))``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: those of the Conv2d it adapts
            (``A`` must cut the same patches as the frozen kernel, so it takes its size, stride, padding).
        rank, alpha, dropout, use_rslora: as in :class:`lora_lab.lora.LoRALayer`.
        init: how ``A`` starts. ``"peft"`` (default): ``U(+-1/sqrt(in*kh*kw))``, the fan-in of one patch,
            which is what ``nn.Conv2d(in, rank, kernel)`` and PEFT draw. ``"textbook"``: ``U(+-1/sqrt(rank))``,
            what the textbook's ``kaiming_uniform_`` on a ``(fan_in, rank)`` matrix gives, as for Linear.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, rank: int, alpha: float, *,
                 stride=1, padding=0, dropout: float = 0.0, use_rslora: bool = False, init: str = "peft"):
        super().__init__()
        check_hparams(rank, alpha, dropout)
        check_init(init)
        rank, alpha, dropout = int(rank), plain_number(alpha), float(dropout)
        kh, kw = nn.modules.utils._pair(kernel_size)
        fan_in = in_channels * kh * kw
        if rank > min(fan_in, out_channels):
            warnings.warn(f"rank={rank} is larger than this convolution's matrix view allows: its kernel read as a "
                          f"matrix is {out_channels} x {fan_in} (out x in*kh*kw), so B @ A cannot have a rank "
                          f"above {min(fan_in, out_channels)}; the extra rank only adds parameters and compute. "
                          f"Use rank <= {min(fan_in, out_channels)} here.", UserWarning, stacklevel=2)
        self.A = nn.Parameter(torch.empty(rank, in_channels, kh, kw))
        bound = 1 / math.sqrt(fan_in if init == "peft" else rank)
        nn.init.uniform_(self.A, -bound, bound)
        self.B = nn.Parameter(torch.zeros(out_channels, rank, 1, 1))  # zero => the update starts at exactly 0
        self.init = init
        self.stride = nn.modules.utils._pair(stride)
        self.padding = padding if isinstance(padding, str) else nn.modules.utils._pair(padding)
        self.rank = rank
        self.alpha = alpha
        self.use_rslora = bool(use_rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    # the hyperparameters behave exactly as in the Linear LoRA (one definition, so they cannot drift apart):
    # scaling is computed from rank, alpha and the rule on every read; hparams()/set_hparams() are what adapter
    # files record and restore
    scaling = LoRALayer.scaling
    dropout_p = LoRALayer.dropout_p
    hparams = LoRALayer.hparams
    set_hparams = LoRALayer.set_hparams

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.conv2d(self.dropout(x), self.A, stride=self.stride, padding=self.padding)  # the kernel: in -> rank
        return F.conv2d(h, self.B) * self.scaling  # 1x1: rank -> out, pixel by pixel

    def delta_weight(self) -> torch.Tensor:
        """The update as a conv kernel shaped like ``nn.Conv2d.weight``, ``(out, in, kh, kw)``:
        ``scaling * B @ A`` in the matrix view, folded back into kernels."""
        return _delta(self.A, self.B, self.scaling)

    def extra_repr(self) -> str:
        rule = "alpha/sqrt(rank)" if self.use_rslora else "alpha/rank"
        o, r = self.B.shape[:2]
        _, i, kh, kw = self.A.shape
        return (f"in_channels={i}, out_channels={o}, kernel_size=({kh}, {kw}), rank={r}, alpha={self.alpha}, "
                f"scaling={self.scaling:g} ({rule})")


def _delta(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """``scaling * B @ A`` in the matrix view ``(out, rank) @ (rank, in*kh*kw)``, as a ``(out, in, kh, kw)`` kernel."""
    return (B.flatten(1) @ A.flatten(1)).view(B.shape[0], *A.shape[1:]) * scaling


class Conv2dWithLoRA(LoRAWrapper):
    """A frozen-able ``nn.Conv2d`` plus a :class:`Conv2dLoRALayer`: ``conv(x) + lora(x)``.

    The Conv2d twin of :class:`lora_lab.lora.LinearWithLoRA`, with the same options and the same rules
    (one shared implementation, :class:`lora_lab.lora.layer.LoRAWrapper`): ``merge()`` folds ``delta_weight`` into
    ``conv.weight`` (the merged layer is one plain convolution, as fast as the base), ``unmerge()`` takes it out
    exactly (bit for bit in fp16/bf16), both idempotent; training through a merged layer raises instead of
    silently learning nothing. Only two things are the convolution's own: the base layer it holds and how
    ``A`` and ``B`` fold into a kernel (:func:`_delta`).
    """

    _base_attr = "conv"

    def __init__(self, conv: nn.Conv2d, rank: int, alpha: float, *, dropout: float = 0.0,
                 use_rslora: bool = False, init: str = "peft"):
        check_conv2d_supported(conv)
        with on_device_of(conv.weight):
            lora = Conv2dLoRALayer(conv.in_channels, conv.out_channels, conv.kernel_size, rank, alpha,
                                   stride=conv.stride, padding=conv.padding, dropout=dropout,
                                   use_rslora=use_rslora, init=init)
        super().__init__(conv, lora)

    @staticmethod
    def lora_shapes(conv: nn.Conv2d, rank: int) -> dict[str, tuple[int, ...]]:
        """The shapes of ``lora.A`` and ``lora.B`` for this conv and rank (what an adapter file must hold)."""
        kh, kw = conv.kernel_size
        return {"A": (rank, conv.in_channels, kh, kw), "B": (conv.out_channels, rank, 1, 1)}

    # the update as a (out, in, kh, kw) kernel: what merge() adds to conv.weight and unmerge() takes out
    _delta = staticmethod(_delta)


def replace_conv2d_with_lora(model: nn.Module, rank: int, alpha: float, *, target="all",
                             exclude: Sequence[str] = DEFAULT_EXCLUDE, dropout: float = 0.0,
                             use_rslora: bool = False, init: str = "peft") -> nn.Module:
    """Wrap the model's ``nn.Conv2d`` layers in :class:`Conv2dWithLoRA`, recursively and in place.

    The Conv2d twin of :func:`lora_lab.lora.replace_linear_with_lora`: ``target`` is ``"all"`` or a list of
    glob patterns over full module names (``["features.0", "features.3"]``); ``exclude`` patterns are never
    wrapped. Everything is checked before anything changes (a conflict with an existing wrapper, a Conv2d this
    LoRA cannot adapt among the targets, a bad rank), so an error leaves the model as it was. Layers already
    wrapped with the same settings are left alone. Linear layers are not touched: call
    ``replace_linear_with_lora`` too (with the same rank and alpha, so that one adapter file describes both).
    Returns ``model``.
    """
    check_hparams(rank, alpha, dropout)
    check_init(init)
    if isinstance(target, str) and target != "all":
        raise ValueError(f"target for convolutions must be 'all' or a list of name patterns, got {target!r} "
                         "('attention' and 'mlp' name transformer layers)")
    wrapped, existing = wrap_layers(model, Conv2dWithLoRA, nn.Conv2d, rank, alpha, target=target, exclude=exclude,
                                     dropout=dropout, use_rslora=use_rslora, init=init, check=check_conv2d_supported)
    if not wrapped and not existing:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        hint = (f"its Conv2d layers are {convs[:6]}{' ...' if len(convs) > 6 else ''}; check target={target!r} "
                f"and exclude={tuple(exclude)!r}") if convs else "it has no nn.Conv2d layer at all"
        raise ValueError(f"replace_conv2d_with_lora found no layer to wrap in {type(model).__name__}: {hint}")
    return model
