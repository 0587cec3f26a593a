"""Interactive controls for the notebooks: move a slider, see the answer at once.

Every widget here has three layers, so that the idea works with or without a live front end:

1. a plain function that computes the answer (``LowRank.at``, :func:`lora_budget`,
   :func:`first_update_norm`, :func:`classify_message`, ...): unit-tested, no front end needed;
2. a function that draws it (a matplotlib ``Figure`` built without ``pyplot``, so a redraw from a slider never
   leaks a stray figure into the next cell, or a table with an HTML and a plain-text form);
3. a thin ``*_widget`` function that wires ipywidgets controls to 1 and 2.

The default state is always displayed first as an ordinary output (a PNG figure or a table), and a slider
redraws that same output in place (a display id). So a notebook read on GitHub or nbviewer, or run under
nbval, shows the default picture, and re-running the cell in JupyterLab or Colab gives the live control.
A bad value (rank 0, a rank above the layer's width, an empty message) cannot break a widget: the controls
limit what can be chosen, and anything else shows its error message in place of the answer.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from html import escape
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .lora import (
    count_parameters,
    load_adapter,
    lora_layers,
    lora_scaling,
    mark_only_lora_trainable,
    merge_lora,
    replace_linear_with_lora,
    unmerge_lora,
)

__all__ = ["in_kernel", "live_frontend", "Report", "Interactive", "interactive",
           "LowRank", "RankApprox", "rank_summary", "decaying_matrix", "draw_rank", "draw_spectrum", "rank_slider",
           "spectrum_slider",
           "CALCULATOR_MODELS", "SCALING_RULES", "scaling_factor", "meta_classifier", "LoRABudget", "lora_budget",
           "budget_report", "lora_calculator", "first_update_norm", "draw_first_update", "scaling_explorer",
           "TrainingCurves", "draw_training", "LiveTraining", "ui_event_poller", "Prediction", "classify_message",
           "AdapterChoice", "AdapterPlayground", "message_playground"]

CONTROLS_NOTE = ("(interactive controls: run this cell in JupyterLab or Colab to use them; "
                 "the output above is their default state)")
NO_WIDGETS_HINT = ("(the controls need ipywidgets, which is not installed here: pip install ipywidgets, then "
                   "restart the kernel; the output above is their default state)")
NO_STOP_HINT = ("(no Stop button here{why}: interrupt the kernel (■) to stop cleanly after the current batch; "
                "the history so far is kept)")


# --------------------------------------------------------------------------------------------------------------
# ipywidgets, if there is one: every widget works on ipywidgets 7.7 (Colab) and 8 with the same core API, and
# without ipywidgets at all shows its default state and a one-line hint
# --------------------------------------------------------------------------------------------------------------

class _StaticControl:
    """A control without a front end (no ipywidgets): it holds a value, and setting it tells the observers, as
    an ipywidget does, so the wiring is the same (and testable)."""

    def __init__(self, value=None, **kwargs):
        self.value_ = value
        self.kwargs = kwargs
        self.observers = []

    @property
    def value(self):
        return self.value_

    @value.setter
    def value(self, new):
        old, self.value_ = self.value_, new
        if new != old:
            for fn in self.observers:
                fn({"name": "value", "old": old, "new": new, "owner": self, "type": "change"})

    def observe(self, fn, names=None):
        self.observers.append(fn)

    def on_click(self, fn):
        pass

    def __getattr__(self, name):  # max, min, description, disabled, ...: whatever was given, else None
        return self.__dict__.get("kwargs", {}).get(name)


class _NoWidgets:
    """Stands in for the ``ipywidgets`` module when it is not installed: every control is a :class:`_StaticControl`."""

    available = False

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: _StaticControl(**kwargs) if name != "Layout" else None


def _ipywidgets():
    """The ``ipywidgets`` module, or a stand-in (:class:`_NoWidgets`) when it cannot be imported."""
    try:
        import ipywidgets
    except ImportError:
        return _NoWidgets()
    return ipywidgets


def _has_widgets(w) -> bool:
    return getattr(w, "available", True)


# --------------------------------------------------------------------------------------------------------------
# wiring: display the default state once, redraw it in place on every change
# --------------------------------------------------------------------------------------------------------------

def in_kernel() -> bool:
    """Are we inside a Jupyter kernel (JupyterLab, Colab, nbconvert, nbval), not a plain script?"""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def live_frontend() -> bool:
    """Is someone watching a live notebook, so that a live view (figure redrawn while training, Stop button)
    makes sense? Not in a script, not under CI, nbval or ``make execute`` (they set ``CI`` or
    ``LORA_LAB_PROGRESS=0``): there a live view would only save its first frame, so the plain progress output is
    used instead. ``LORA_LAB_WIDGETS=1`` or ``0`` overrides the guess."""
    forced = os.environ.get("LORA_LAB_WIDGETS")
    if forced in ("0", "1"):
        return forced == "1" and in_kernel()
    return in_kernel() and os.environ.get("LORA_LAB_PROGRESS", "1") != "0" and not os.environ.get("CI")


class Report:
    """A table (or any short result) with an HTML form for notebooks and a plain-text form for text readers,
    nbval and logs. ``display(Report(...))`` shows whichever the front end can."""

    def __init__(self, html: str, text: str):
        self.html, self.text = html, text

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self.html, "text/plain": self.text}

    def __repr__(self) -> str:
        return self.text


def _message(error: Exception) -> Report:
    msg = str(error)
    return Report(f'<div style="color:#b00020;font-weight:bold">⚠ {escape(msg)}</div>', f"⚠ {msg}")


def _bundle(obj) -> dict:
    """The mime bundle of a Figure (a PNG, drawn here, so it shows even where pyplot's inline backend was
    never set up) or of anything with ``_repr_mimebundle_`` (a :class:`Report`)."""
    if isinstance(obj, Figure):
        import base64
        import io

        buf = io.BytesIO()
        obj.savefig(buf, format="png", bbox_inches="tight")
        return {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(obj)}
    if hasattr(obj, "_repr_mimebundle_"):
        return dict(obj._repr_mimebundle_())
    return {"text/plain": repr(obj)}


def _display(obj, **kwargs):
    """Display ``obj``; with ``display_id=True`` the returned handle's ``update(obj)`` redraws it in place."""
    from IPython.display import DisplayHandle, display

    if isinstance(obj, (Figure, Report)):
        handle = display(_bundle(obj), raw=True, **kwargs)
        return _Handle(handle) if isinstance(handle, DisplayHandle) else handle
    return display(obj, **kwargs)


class _Handle:
    def __init__(self, handle):
        self.handle = handle

    def update(self, obj) -> None:
        self.handle.update(_bundle(obj), raw=True)


def _show_controls(box) -> None:
    """Display the controls with a plain-text note for readers without widgets (GitHub, nbval), instead of
    ipywidgets' ``VBox(children=(...))``."""
    if not hasattr(box, "_repr_mimebundle_"):  # ipywidgets 7 (as on Colab) displays itself
        _display(box)
        return
    bundle = dict(box._repr_mimebundle_() or {})
    bundle["text/plain"] = CONTROLS_NOTE
    _display(bundle, raw=True)


@dataclass
class Interactive:
    """Controls wired to a draw function. ``draw`` returns one output or a tuple of them (a Figure, a
    :class:`Report`); ``outputs`` holds the last redraw's, ``result`` the first of them (a Report with the error
    message if the values were bad). ``redraw()`` draws again from the controls' current values (a change of
    any control calls it)."""

    draw: Callable
    controls: dict
    outputs: tuple = ()
    error: str | None = None
    handles: list = field(default_factory=list)
    redraws: int = 0
    box: object = None

    @property
    def result(self):
        return self.outputs[0]

    def values(self) -> dict:
        return {k: w.value for k, w in self.controls.items()}

    def redraw(self, *_):
        try:
            out, self.error = self.draw(**self.values()), None
            out = out if isinstance(out, tuple) else (out,)
        except (ValueError, TypeError) as e:  # a bad value: say so in place, keep the widget alive
            out, self.error = (_message(e),), str(e)
        n = max(len(out), len(self.outputs))
        self.outputs = out + (Report("", ""),) * (n - len(out))  # blank what the message replaces
        self.redraws += 1
        for handle, obj in zip(self.handles, self.outputs):
            handle.update(obj)
        return self.result


def interactive(draw: Callable, controls: dict, *, show: bool = True, before=None) -> Interactive:
    """Wire ``controls`` (name -> ipywidget) to ``draw(**values)``: draw the default state and display it (a
    plain output, so it is saved with the notebook), then display the controls; every change redraws that
    same output in place. ``show=False`` builds and draws without displaying (tests, scripts). ``before``: an
    optional widget shown above the controls (e.g. a note)."""
    w = _ipywidgets()
    it = Interactive(draw, dict(controls))
    it.redraw()
    it.redraws = 0
    kids = ([before] if before is not None else []) + list(controls.values())
    it.box = w.VBox(kids) if _has_widgets(w) else None
    if show and in_kernel():
        it.handles = [_display(obj, display_id=True) for obj in it.outputs]
        if it.box is not None:
            _show_controls(it.box)
        else:  # no ipywidgets: the default state above, and how to get the controls
            _display(Report(f'<div style="color:#555"><i>{escape(NO_WIDGETS_HINT)}</i></div>', NO_WIDGETS_HINT))
    for c in controls.values():
        c.observe(it.redraw, names="value")
    return it


def _fig(width=10.0, height=4.0, ncols=1, **kw):
    """A Figure outside pyplot (nothing to close, nothing shown by the inline backend at the next cell)."""
    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    axes = fig.subplots(1, ncols, **kw)
    for ax in np.atleast_1d(axes):
        ax.grid(True, alpha=0.3)
    return fig, axes


# --------------------------------------------------------------------------------------------------------------
# 1. notebook 1: rank k of a truncated SVD (the photo, and a matrix with a chosen spectrum)
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RankApprox:
    """The best rank-``k`` approximation of a matrix and what it costs and loses."""

    k: int
    image: np.ndarray  # the rank-k matrix
    rel_error: float  # measured: ||A - A_k||_F / ||A||_F
    bound: float  # Eckart-Young: sqrt(sum_{i>k} s_i^2) / ||A||_F (the least error any rank-k matrix can have)
    stored: int  # numbers kept: U_k, the k singular values, V_k
    full: int  # numbers of the full matrix
    energy: float  # share of sum(s_i^2) kept

    @property
    def stored_share(self) -> float:
        return self.stored / self.full

    @property
    def break_even(self) -> int:
        """The highest rank whose factors, ``k (m + n + 1)`` numbers, still fit in the matrix's ``m n``."""
        return self.full // (self.stored // self.k)


class LowRank:
    """A matrix and its SVD, computed once, so that any rank ``k`` is a cheap product (fast enough for a
    slider). ``at(k)`` returns a :class:`RankApprox`."""

    def __init__(self, matrix):
        a = torch.as_tensor(np.asarray(matrix), dtype=torch.float64)
        if a.ndim != 2 or min(a.shape) < 1:
            raise ValueError(f"LowRank needs a 2-D matrix, got shape {tuple(a.shape)}; for an RGB image pass "
                             "one channel or the grey values, e.g. img[..., :3].mean(axis=2)")
        self.matrix = a
        self.U, self.S, self.Vh = torch.linalg.svd(a, full_matrices=False)
        self.norm = float(torch.linalg.norm(a))
        tail = torch.flip(torch.cumsum(torch.flip(self.S ** 2, [0]), 0), [0])  # tail[i] = sum_{j>=i} s_j^2
        self._tail = torch.cat([tail, torch.zeros(1, dtype=tail.dtype)])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    @property
    def max_rank(self) -> int:
        return min(self.shape)

    def check_rank(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"rank k must be a whole number from 1 to {self.max_rank}, got {k!r}")
        if not 1 <= k <= self.max_rank:
            raise ValueError(f"rank k must be from 1 to {self.max_rank} (the smaller side of this "
                             f"{self.shape[0]} x {self.shape[1]} matrix), got {k}")
        return int(k)

    def bound(self, k: int) -> float:
        """Eckart-Young: the relative Frobenius error of the best rank-k matrix, from the singular values alone."""
        return math.sqrt(float(self._tail[k])) / self.norm if self.norm else 0.0

    def bounds(self) -> np.ndarray:
        """The Eckart-Young relative error for every k = 1 .. max_rank."""
        return (torch.sqrt(self._tail[1:self.max_rank + 1]) / (self.norm or 1.0)).numpy()

    def rank_for(self, rel_error: float) -> int | None:
        """The smallest rank whose Eckart-Young error is at most ``rel_error`` (None if no rank reaches it)."""
        return next((i for i, b in enumerate(self.bounds(), 1) if b <= rel_error), None)

    def at(self, k) -> RankApprox:
        k = self.check_rank(k)
        approx = (self.U[:, :k] * self.S[:k]) @ self.Vh[:k]
        m, n = self.shape
        err = float(torch.linalg.norm(self.matrix - approx)) / (self.norm or 1.0)
        energy = float((self.S[:k] ** 2).sum() / (self.S ** 2).sum()) if self.norm else 1.0
        return RankApprox(k, approx.numpy(), err, self.bound(k), k * (m + n + 1), m * n, energy)


def draw_rank(low: LowRank, k: int, title: str = "truncated SVD") -> Figure:
    """Original | rank-k reconstruction | error against rank, with k marked and the numbers in the titles."""
    r = low.at(k)
    fig, (a0, a1, a2) = _fig(14, 4.3, 3, gridspec_kw={"width_ratios": [1, 1, 1.35]})
    for ax, img, t in ((a0, low.matrix.numpy(), f"original: {r.full:,} numbers"),
                       (a1, np.clip(r.image, 0, 1) if low.matrix.min() >= 0 and low.matrix.max() <= 1 else r.image,
                        f"rank {r.k}: {r.stored:,} numbers ({r.stored_share:.1%})")):
        ax.imshow(img, cmap="gray", vmin=None)
        ax.set_title(t, fontsize=12)
        ax.axis("off")
    ks = np.arange(1, low.max_rank + 1)
    m, n = low.shape
    a2.plot(ks, low.bounds(), label="Eckart–Young bound √(Σᵢ₌ₖ₊₁ σᵢ²) / ‖A‖")
    a2.plot(ks, ks * (m + n + 1) / (m * n), color="tab:green", ls="--", label="numbers stored / full matrix")
    a2.plot([r.k], [r.rel_error], "o", ms=10, color="tab:red", label=f"measured error at k={r.k}: {r.rel_error:.3f}")
    a2.plot([r.k], [r.stored_share], "s", ms=8, color="tab:green")
    a2.axvline(r.k, color="tab:red", lw=1, ls=":")
    a2.set(xlabel="rank k kept", ylabel="share", ylim=(0, 1.02), xlim=(0, low.max_rank))
    a2.set_title(f"rank {r.k}: error {r.rel_error:.3f} = bound {r.bound:.3f}, energy kept {r.energy:.1%}", fontsize=12)
    a2.legend(fontsize=10, loc="upper right")
    fig.suptitle(title, fontsize=13)
    return fig


@lru_cache(maxsize=4)
def _orthonormal(m: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q1, q2


def decaying_matrix(decay: float, m: int = 200, n: int = 120, seed: int = 0) -> torch.Tensor:
    """An ``m x n`` matrix whose singular values are ``10 * decay**i``, i = 0, 1, ...: random orthonormal
    directions (fixed by ``seed``) with a spectrum you choose. ``decay`` near 1: slow decay, a high rank is
    needed; near 0: almost rank 1."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float, np.floating)) or not 0 < decay <= 1:
        raise ValueError(f"decay must be a number in (0, 1] (each singular value is decay times the one before), "
                         f"got {decay!r}")
    if m < 1 or n < 1:
        raise ValueError(f"the matrix needs at least one row and one column, got {m} x {n}")
    m, n = max(m, n), min(m, n)
    q1, q2 = _orthonormal(m, n, seed)
    sigma = 10.0 * float(decay) ** torch.arange(n, dtype=torch.float64)
    return q1 @ torch.diag(sigma) @ q2.T


def draw_spectrum(decay: float, k: int, m: int = 200, n: int = 120) -> Figure:
    """Singular values (kept ones highlighted) and error against rank for :func:`decaying_matrix`."""
    low = LowRank(decaying_matrix(decay, m, n))
    r = low.at(k)
    s = low.S.numpy()
    fig, (a1, a2) = _fig(13, 4.2, 2)
    idx = np.arange(1, len(s) + 1)
    a1.semilogy(idx, np.maximum(s, 1e-17), color="lightgray", lw=2, label="dropped")
    a1.semilogy(idx[:k], np.maximum(s[:k], 1e-17), color="tab:blue", lw=3, label=f"kept (first {k})")
    a1.set(xlabel="index i", ylabel="σᵢ (log)")
    a1.set_title(f"spectrum σᵢ = 10 · {decay:g}^i", fontsize=12)
    a1.legend(fontsize=10)
    a2.semilogy(np.arange(1, low.max_rank + 1), np.maximum(low.bounds(), 1e-17), label="Eckart–Young bound")
    a2.semilogy([k], [max(r.rel_error, 1e-17)], "o", ms=10, color="tab:red", label=f"measured: {r.rel_error:.2e}")
    a2.axvline(k, color="tab:red", lw=1, ls=":")
    need = low.rank_for(0.01)
    a2.set(xlabel="rank k kept", ylabel="relative error (log)", ylim=(1e-10, 2))
    a2.set_title(f"rank {k}: error {r.rel_error:.2e}; 1% error needs rank {need}", fontsize=12)
    a2.legend(fontsize=10)
    fig.suptitle(f"{low.shape[0]} × {low.shape[1]} matrix: rank {k} stores {r.stored:,} of {r.full:,} numbers "
                 f"({r.stored_share:.1%})", fontsize=13)
    return fig


def rank_slider(matrix, k: int = 20, *, title: str = "truncated SVD", show: bool = True) -> Interactive:
    """A rank slider on a matrix (e.g. the photo): the reconstruction, its error, the Eckart-Young bound and
    the numbers stored, all redrawn together. The slider only offers ranks 1 .. the matrix's smaller side."""
    w = _ipywidgets()
    low = LowRank(matrix)
    k = min(max(int(k), 1), low.max_rank)
    slider = w.IntSlider(value=k, min=1, max=low.max_rank, description="rank k", continuous_update=False,
                         style={"description_width": "initial"}, layout=w.Layout(width="60%"))
    return interactive(lambda k: (draw_rank(low, k, title), rank_summary(low.at(k))), {"k": slider}, show=show)


def rank_summary(r: RankApprox) -> Report:
    """The numbers behind the rank-k picture, as text (readable without the image)."""
    text = (f"rank {r.k}: {r.stored:,} numbers stored of {r.full:,} ({r.stored_share:.1%}); relative error "
            f"{r.rel_error:.4f}, Eckart–Young bound {r.bound:.4f}; energy kept {r.energy:.2%}. Above rank "
            f"{r.break_even} the factors would store more numbers than the matrix ({r.full:,} / "
            f"{r.stored // r.k:,} per rank)")
    return Report(f'<div style="font-size:15px">{escape(text)}</div>', text)


def spectrum_slider(decay: float = 0.85, k: int = 10, m: int = 200, n: int = 120, *, show: bool = True) -> Interactive:
    """Two sliders: how fast the singular values decay, and the rank kept."""
    w = _ipywidgets()
    d = w.FloatSlider(value=decay, min=0.5, max=0.99, step=0.01, description="decay per index",
                      continuous_update=False, style={"description_width": "initial"}, layout=w.Layout(width="60%"))
    kk = w.IntSlider(value=k, min=1, max=min(m, n), description="rank k", continuous_update=False,
                     style={"description_width": "initial"}, layout=w.Layout(width="60%"))
    def draw(decay, k):
        r = LowRank(decaying_matrix(decay, m, n)).at(k)
        text = (f"decay {decay:g}, rank {k}: relative error {r.rel_error:.2e} (bound {r.bound:.2e}); stores "
                f"{r.stored:,} of {r.full:,} numbers ({r.stored_share:.1%})")
        return draw_spectrum(decay, k, m, n), Report(f'<div style="font-size:15px">{escape(text)}</div>', text)

    return interactive(draw, {"decay": d, "k": kk}, show=show)


# --------------------------------------------------------------------------------------------------------------
# 2. notebook 2: the LoRA calculator, and what the scaling rule does to the first step
# --------------------------------------------------------------------------------------------------------------

CALCULATOR_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "all-MiniLM-L6-v2")
SCALING_RULES = ("α/r", "raw α", "rsLoRA α/√r")


def scaling_factor(rule: str, rank: int, alpha: float) -> float:
    """The factor the update ``x A B`` is multiplied by: ``alpha / rank`` (LoRA paper, PEFT, lora_lab),
    raw ``alpha`` (the textbook code), or ``alpha / sqrt(rank)`` (rsLoRA)."""
    if rule not in SCALING_RULES:
        raise ValueError(f"rule must be one of {SCALING_RULES}, got {rule!r}")
    if rule == "raw α":
        return float(alpha)
    return lora_scaling(rank, alpha, use_rslora=rule == "rsLoRA α/√r")


def _minilm_config():
    """all-MiniLM-L6-v2's shape (its config.json: 6 layers, 384 wide, 12 heads, MLP 1536, 30,522 tokens)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)


def meta_classifier(name: str, num_classes: int = 2) -> nn.Module:
    """The course's classifier for ``name`` (a GPT-2 size or all-MiniLM-L6-v2) on PyTorch's meta device: every
    shape, no weights and no memory, so even GPT-2 XL builds in a fraction of a second."""
    if name not in CALCULATOR_MODELS:
        raise ValueError(f"model must be one of {CALCULATOR_MODELS}, got {name!r}")
    with torch.device("meta"), torch.random.fork_rng():  # building draws (unused) random numbers
        if name == "all-MiniLM-L6-v2":
            try:
                from transformers import BertModel
            except ImportError:
                raise ValueError("all-MiniLM-L6-v2's shape needs the transformers package: "
                                 "pip install 'lora-lab[offline]'") from None
            from .minilm import MiniLMClassifier

            return MiniLMClassifier(BertModel(_minilm_config(), add_pooling_layer=False), num_classes)
        from .gpt2 import GPT, PRESETS

        return GPT(PRESETS[name]).to_classifier(num_classes)


def safetensors_bytes(shapes: dict, itemsize: int = 4, dtype: str = "F32", metadata=None) -> int:
    """The exact size of a safetensors file holding tensors of these shapes (name -> shape), one dtype: an
    8-byte length, a JSON header (tensors sorted by name, padded with spaces to a multiple of 8), the data."""
    import json

    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in sorted(shapes):
        size = math.prod(shapes[name]) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shapes[name]), "data_offsets": [offset, offset + size]}
        offset += size
    n = len(json.dumps(header, separators=(",", ":")).encode())
    return 8 + n + (-n) % 8 + offset


@dataclass(frozen=True)
class LoRABudget:
    """What LoRA on one model costs, counted on the meta device with the package's own functions."""

    model: str
    rank: int
    target: str
    alpha: float
    rule: str
    total: int  # parameters of the wrapped classifier (tied weights once)
    lora: int  # LoRA A and B
    head: int  # the new classification head (trained in full)
    trainable: int  # lora + head
    layers: int  # wrapped Linear layers
    shapes: tuple  # ((in, out, how many), ...) of the wrapped layers
    adapter_bytes: int  # adapter.safetensors as save_adapter writes it (fp32 LoRA weights + head)
    adamw_bytes: int  # AdamW's two fp32 moments per trainable parameter
    scaling: float
    max_rank: int  # the smallest wrapped layer's smaller side

    @property
    def base(self) -> int:
        """Parameters of the classifier before LoRA (transformer + new head): what full fine-tuning trains."""
        return self.total - self.lora

    @property
    def share(self) -> float:
        """LoRA parameters / the base's, the denominator of notebook 2's section 4 table."""
        return self.lora / self.base

    @property
    def trainable_share(self) -> float:
        """Trainable (LoRA + head) / every parameter of the wrapped model, as ``count_parameters`` reports it."""
        return self.trainable / self.total

    @property
    def formula(self) -> str:
        """The closed form with the numbers filled in."""
        terms = " + ".join(f"{c}×({i}+{o})" for i, o, c in self.shapes)
        return f"r · Σ (in + out) = {self.rank} × [{terms}] = {self.lora:,}"


def lora_budget(model: str = "gpt2", rank: int = 16, target: str = "all", alpha: float = 16,
                rule: str = "α/r") -> LoRABudget:
    """LoRA on ``model`` (a GPT-2 size or all-MiniLM-L6-v2, as a 2-class classifier): trainable parameters and
    their share, the adapter file's size, AdamW's state and the scaling factor.

    The counts come from the package itself: :func:`replace_linear_with_lora`, :func:`mark_only_lora_trainable`
    and :func:`count_parameters` on a meta-device model, not from a second formula; the closed form
    ``r · Σ (in + out)`` is shown next to them and must agree."""
    from .lora import lora_state_dict

    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
    if not isinstance(alpha, (int, float, np.number)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    factor = scaling_factor(rule, int(rank), alpha)
    m = meta_classifier(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank above a layer's width: checked below, with a clearer message
        replace_linear_with_lora(m, int(rank), alpha, target=target)
    layers = lora_layers(m)
    width = min(min(x.linear.in_features, x.linear.out_features) for x in layers.values())
    if rank > width:
        raise ValueError(f"rank {rank} is above the width of {model}'s smallest wrapped layer ({width}): the update "
                         f"cannot have a rank above {width}, so the extra rank only adds parameters. "
                         f"Choose a rank from 1 to {width}.")
    mark_only_lora_trainable(m, extra=["classifier"])
    pc = count_parameters(m)
    lora = sum(p.numel() for n, p in m.named_parameters() if ".lora." in f".{n}")
    shapes = OrderedDict()
    for x in layers.values():
        key = (x.linear.in_features, x.linear.out_features)
        shapes[key] = shapes.get(key, 0) + 1
    closed_form = int(rank) * sum(c * (i + o) for (i, o), c in shapes.items())
    if closed_form != lora:  # the lesson's formula must describe what the package built
        raise RuntimeError(f"the closed form gives {closed_form:,} LoRA parameters but {lora:,} were counted on "
                           f"{model}: lora_budget and replace_linear_with_lora disagree (a bug; please report it)")
    adapter = safetensors_bytes({k: tuple(v.shape) for k, v in lora_state_dict(m, ["classifier"]).items()},
                                metadata={"format": "pt"})
    return LoRABudget(model, int(rank), target, float(alpha), rule, pc.total, lora, pc.trainable - lora,
                      pc.trainable, len(layers), tuple((i, o, c) for (i, o), c in shapes.items()), adapter,
                      8 * pc.trainable, factor, width)


def _size(b: int) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


def budget_report(b: LoRABudget) -> Report:
    """The calculator's answer as a table (HTML and plain text)."""
    full_state = 8 * b.base  # full fine-tuning trains the base classifier: no LoRA parameters
    rows = [("model", f"{b.model} as a 2-class classifier: {b.base:,} parameters (+ LoRA = {b.total:,})"),
            ("LoRA on", f"{b.target}: {b.layers} Linear layers, rank {b.rank}"),
            ("LoRA parameters", f"{b.formula}  (formula = count on the meta device ✓)"),
            ("trainable", f"{b.lora:,} LoRA + {b.head:,} head = {b.trainable:,}"),
            ("share", f"LoRA / base = {b.share:.3%}; trainable / (base + LoRA) = {b.trainable_share:.3%} "
                      f"(what count_parameters reports)"),
            ("adapter file", f"{_size(b.adapter_bytes)} ({b.adapter_bytes:,} bytes, fp32 safetensors)"),
            ("AdamW state", f"{_size(b.adamw_bytes)} (8 bytes × {b.trainable:,}); full fine-tuning: "
                            f"{_size(full_state)} (8 bytes × {b.base:,}), {full_state / b.adamw_bytes:.0f}× more"),
            ("scaling", f"{b.rule} with α = {b.alpha:g}, r = {b.rank}: the update is multiplied by {b.scaling:.4g}")]
    text = "\n".join(f"{k:>16}: {v}" for k, v in rows)
    html = ('<table style="font-size:14px">' + "".join(
        f'<tr><th style="text-align:right;padding-right:12px">{escape(k)}</th>'
        f'<td style="text-align:left">{escape(v)}</td></tr>' for k, v in rows) + "</table>")
    return Report(html, text)


def lora_calculator(model: str = "gpt2", rank: int = 16, target: str = "all", alpha: float = 16,
                    rule: str = "α/r", *, show: bool = True) -> Interactive:
    """Model, rank, targets, α and scaling rule -> :func:`budget_report`. The rank slider's maximum follows the
    model (its smallest wrapped layer's width)."""
    w = _ipywidgets()
    style = {"description_width": "initial"}
    models = [m for m in CALCULATOR_MODELS if m != "all-MiniLM-L6-v2" or _has_transformers()]
    controls = {
        "model": w.Dropdown(options=models, value=model, description="model", style=style),
        "rank": w.IntSlider(value=rank, min=1, max=lora_budget(model, 1, target).max_rank, description="rank r",
                            continuous_update=False, style=style, layout=w.Layout(width="60%")),
        "target": w.ToggleButtons(options=["attention", "mlp", "all"], value=target, description="LoRA on",
                                  style=style),
        "alpha": w.BoundedFloatText(value=alpha, min=0.001, max=1e4, step=1, description="α", style=style),
        "rule": w.ToggleButtons(options=list(SCALING_RULES), value=rule, description="scaling", style=style),
    }

    def on_model(change):  # the widest rank this model allows
        cap = lora_budget(change["new"], 1, controls["target"].value).max_rank
        controls["rank"].max = cap

    controls["model"].observe(on_model, names="value")
    return interactive(lambda **v: budget_report(lora_budget(**v)), controls, show=show)


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


UPDATE_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@lru_cache(maxsize=4096)
def first_update_norm(rank: int, rule: str = "α/r", init: str = "peft", alpha: float = 16, lr: float = 1e-3,
                      d: int = 256) -> float:
    """‖ΔW‖ (Frobenius) after one Adam step, measured live on a fresh LoRA layer on a ``d x d`` Linear: the
    same experiment as notebook 2's table (seeded, the same data for every run), so the numbers agree."""
    from .lora import LinearWithLoRA

    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= d:
        raise ValueError(f"rank must be a whole number from 1 to {d} (the layer is {d} x {d}: a higher rank "
                         f"cannot add anything), got {rank!r}")
    factor = scaling_factor(rule, int(rank), alpha)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        lin = nn.Linear(d, d).requires_grad_(False)
        layer = LinearWithLoRA(lin, int(rank), alpha, use_rslora=rule == "rsLoRA α/√r", init=init)
    layer.lora.scaling = factor
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, d, generator=g), torch.randn(64, d, generator=g)
    opt = torch.optim.Adam([layer.lora.A, layer.lora.B], lr=lr)
    ((layer(x) - y) ** 2).mean().backward()
    opt.step()
    with torch.no_grad():
        return float(torch.linalg.norm(layer.lora.delta_weight()))


def draw_first_update(rank: int = 16, rule: str = "α/r", init: str = "peft", alpha: float = 16) -> Figure:
    """‖ΔW‖ after one step against rank, for every rule under the chosen init; the chosen rule bold, the
    chosen rank marked with its measured value."""
    value = first_update_norm(rank, rule, init, alpha)
    fig, ax = _fig(9, 4.3)
    for r_ in SCALING_RULES:
        ys = [first_update_norm(k, r_, init, alpha) for k in UPDATE_RANKS]
        ax.loglog(UPDATE_RANKS, ys, "o-", lw=3 if r_ == rule else 1.2, alpha=1 if r_ == rule else 0.45, label=r_)
    ax.loglog([rank], [value], "*", ms=18, color="black", label=f"rank {rank}: {value:.3f}", zorder=5)
    ax.set(xlabel="rank r", ylabel="‖ΔW‖ after one Adam step (log)")
    ax.set_title(f"first update, init={init!r}, α={alpha:g}: {rule} at rank {rank} → ‖ΔW‖ = {value:.3f} "
                 f"(scaling {scaling_factor(rule, rank, alpha):.3g})", fontsize=12)
    ax.legend(fontsize=10)
    return fig


def scaling_explorer(rank: int = 16, rule: str = "α/r", init: str = "peft", alpha: float = 16, *,
                     show: bool = True) -> Interactive:
    """Rank, scaling rule, init and α -> the size of the first update, measured live (one Adam step on a
    256 x 256 layer, a few milliseconds)."""
    w = _ipywidgets()
    style = {"description_width": "initial"}
    controls = {
        "rank": w.IntSlider(value=rank, min=1, max=256, description="rank r", continuous_update=False, style=style,
                            layout=w.Layout(width="60%")),
        "rule": w.ToggleButtons(options=list(SCALING_RULES), value=rule, description="scaling", style=style),
        "init": w.ToggleButtons(options=["peft", "textbook"], value=init, description="init of A", style=style),
        "alpha": w.IntSlider(value=int(alpha), min=1, max=64, description="α", continuous_update=False, style=style),
    }
    def draw(rank, rule, init, alpha):
        v = first_update_norm(rank, rule, init, alpha)
        text = (f"rank {rank}, {rule}, init {init!r}, α = {alpha:g}: scaling {scaling_factor(rule, rank, alpha):.4g}, "
                f"‖ΔW‖ after one Adam step = {v:.4f}")
        return draw_first_update(rank, rule, init, alpha), Report(f'<div style="font-size:15px">{escape(text)}</div>',
                                                                  text)

    return interactive(draw, controls, show=show)


# --------------------------------------------------------------------------------------------------------------
# 4. notebook 4: training curves redrawn while training runs, with a Stop button
# --------------------------------------------------------------------------------------------------------------

@dataclass
class TrainingCurves:
    """What the live view has seen: one point per optimizer step, one row per finished epoch."""

    steps: list = field(default_factory=list)  # (step number overall, batch loss, batch accuracy)
    epochs: list = field(default_factory=list)  # rows of train_classifier's history
    steps_per_epoch: int | None = None

    def add(self, info) -> None:
        """Record one ``train_classifier`` callback ``info``."""
        self.steps_per_epoch = info.steps
        per = info.steps or 0
        self.steps.append(((info.epoch - 1) * per + info.step, float(info.loss), float(info.acc)))
        if len(info.history) > len(self.epochs):
            self.epochs = list(info.history)


def _smooth(y, n: int = 10) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if len(y) == 0:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - n, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def draw_training(curves: TrainingCurves, title: str = "training", status: str = "") -> Figure:
    """Loss and accuracy: every batch (faint), a running mean over 10 batches, and validation after each epoch."""
    fig, (a1, a2) = _fig(12, 4.2, 2)
    if curves.steps:
        s, loss, acc = map(np.asarray, zip(*curves.steps))
        a1.plot(s, loss, color="tab:blue", alpha=0.25, lw=1)
        a1.plot(s, _smooth(loss), color="tab:blue", label="train (mean of 10 batches)")
        a2.plot(s, 100 * _smooth(acc), color="tab:blue", label="train (mean of 10 batches)")
    per = curves.steps_per_epoch
    if curves.epochs and per:
        x = [r["epoch"] * per if r["epoch"] * per <= (curves.steps[-1][0] if curves.steps else 0) else
             curves.steps[-1][0] for r in curves.epochs]
        a1.plot(x, [r["val_loss"] for r in curves.epochs], "o--", color="tab:orange", ms=8, label="validation")
        a2.plot(x, [100 * r["val_acc"] for r in curves.epochs], "o--", color="tab:orange", ms=8, label="validation")
    a1.set(xlabel="optimizer step", ylabel="cross-entropy (nats)", title="loss")
    a2.set(xlabel="optimizer step", ylabel="accuracy (%)", title="accuracy", ylim=(0, 101))
    for a in (a1, a2):
        if a.lines:
            a.legend(fontsize=10)
    fig.suptitle(title + (f"\n{status}" if status else ""), fontsize=12)
    return fig


def _ipykernel_major() -> int | None:
    try:
        import ipykernel
    except ImportError:
        return None
    try:
        return int(str(ipykernel.__version__).split(".")[0])
    except ValueError:
        return None


def ui_event_poller():
    """How the Stop button's click reaches the kernel while a cell trains: ``(events, why)``.

    A click is a comm message on the kernel's shell channel. ipykernel 7 handles it while the cell ``await``s
    (``events`` is None: nothing to do). ipykernel 6 (Colab has 6.17.1) queues it behind the running cell, so
    the cell must hand it over itself: ``events`` is jupyter-ui-poll's ``ui_events()``, an async context whose
    ``await poll(n)`` processes up to n waiting messages (execute requests of later cells are held back and run
    after this cell). ``why`` is None when a Stop button can work, else the reason it cannot (no jupyter-ui-poll)."""
    major = _ipykernel_major()
    if not in_kernel() or major is None or major >= 7:
        return None, None
    try:
        from jupyter_ui_poll import ui_events
    except ImportError:
        return None, f" (ipykernel {major} needs jupyter-ui-poll for it: pip install jupyter-ui-poll)"
    return ui_events(), None


class LiveTraining:
    """Train with :func:`lora_lab.train.train_classifier` while one figure of loss and accuracy grows in place,
    with a Stop button that ends training cleanly after the current batch (the history so far is kept and
    returned; ``hist.attrs["stopped_early"]`` says so).

    In a notebook: ``hist = await LiveTraining(title).train(model, loader, val_loader, epochs=3, lr=1e-3)``.
    The ``await`` is what lets the notebook hear the Stop button while training runs: training runs in a
    background thread, and the cell waits without blocking the kernel. Outside a live notebook (a script, CI,
    nbval, ``make execute``: see :func:`live_frontend`) it simply calls ``train_classifier``, whose printed
    progress is the output, and returns the same history. The kernel's interrupt (■) also stops cleanly.
    """

    def __init__(self, title: str = "training", redraw_every_s: float = 1.0, live: bool | None = None):
        self.title, self.redraw_every_s = title, redraw_every_s
        self.live = live_frontend() if live is None else live
        self.curves = TrainingCurves()
        self.stop_requested = threading.Event()
        self.status = ""
        self.handle = None
        self.button = None
        self.redraws = 0

    def request_stop(self, *_) -> None:
        """What the Stop button does: training ends after the batch it is on."""
        self.stop_requested.set()
        if self.button is not None:
            self.button.description, self.button.disabled = "stopping after this batch…", True

    def callback(self, info) -> bool:
        """The ``train_classifier`` callback: record the step; True asks it to stop."""
        self.curves.add(info)
        self.status = (f"epoch {info.epoch}/{info.epochs}, batch {info.step}/{info.steps}: "
                       f"loss {info.loss:.3f}")
        return self.stop_requested.is_set()

    def figure(self) -> Figure:
        return draw_training(self.curves, self.title, self.status)

    def _redraw(self) -> None:
        self.redraws += 1
        if self.handle is not None:
            self.handle.update(self.figure())

    def train_sync(self, model, train_loader, val_loader=None, **kwargs):
        """Train in this thread (no live updates; the Stop flag still works if set from another thread)."""
        from .train import train_classifier

        return train_classifier(model, train_loader, val_loader, callback=self.callback, **kwargs)

    async def train(self, model, train_loader, val_loader=None, **kwargs):
        """Train as ``train_classifier(model, train_loader, val_loader, **kwargs)`` does and return its history."""
        from .train import train_classifier

        if not self.live:
            return train_classifier(model, train_loader, val_loader, **kwargs)
        w = _ipywidgets()
        kwargs.setdefault("progress", False)  # the figure is the progress bar
        log_lines = []
        kwargs["log"] = log_lines.append
        events, why = ui_event_poller() if _has_widgets(w) else (None, " (ipywidgets is not installed)")
        self.status = "starting…"
        self.handle = _display(self.figure(), display_id=True)
        if why is None:
            self.button = w.Button(description="Stop after this batch", button_style="danger", icon="stop")
            self.button.on_click(self.request_stop)
            _display(self.button)
        else:
            self.button = None
            hint = NO_STOP_HINT.format(why=why)
            _display(Report(f'<div style="color:#555"><i>{escape(hint)}</i></div>', hint))
        result, error = {}, {}

        def work():
            try:
                result["hist"] = train_classifier(model, train_loader, val_loader, callback=self.callback, **kwargs)
            except BaseException as e:  # re-raised in the notebook's thread below
                error["e"] = e

        worker = threading.Thread(target=work, name="lora_lab-training", daemon=True)
        worker.start()
        last = time.perf_counter()
        try:
            async with (events or contextlib.nullcontext()) as poll:
                while worker.is_alive():
                    await asyncio.sleep(0.05)
                    if poll is not None:  # ipykernel < 7: hand the kernel the button's click (a comm message)
                        await poll(10)
                    if time.perf_counter() - last >= self.redraw_every_s:
                        self._redraw()
                        last = time.perf_counter()
        except (asyncio.CancelledError, KeyboardInterrupt):  # the kernel's interrupt: stop cleanly, keep the history
            self.request_stop()
            while worker.is_alive():
                worker.join(0.05)
        if "e" in error:
            if self.button is not None:
                self.button.disabled = True
            raise error["e"]
        hist = result["hist"]
        self.curves.epochs = hist.to_dict("records")
        done = f"stopped early in epoch {len(hist)}" if hist.attrs.get("stopped_early") else "finished"
        self.status = f"{done}: " + (log_lines[-1] if log_lines else "")
        self._redraw()
        if self.button is not None:
            self.button.description, self.button.disabled = done, True
        return hist


# --------------------------------------------------------------------------------------------------------------
# 5. notebook 6: try your own message with each adapter, merged or not
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float  # of that label
    probabilities: tuple  # of every class
    latency_ms: float  # median forward pass of this one message
    tokens: int


def _encode(tokenizer, text: str, max_tokens: int | None) -> list[int]:
    ids = tokenizer.encode_ordinary_batch([text])[0]
    return list(ids[:max_tokens] if max_tokens else ids)


@torch.no_grad()
def classify_message(model: nn.Module, tokenizer, text: str, classes=("ham", "spam"), *, max_tokens: int | None = 512,
                     reps: int = 10) -> Prediction:
    """Classify one message: the predicted class, its probability and the median latency of ``reps``
    forward passes. An empty message is an error with the fix in its message, not a silent 50/50."""
    from .experiments import latency_ms

    if not isinstance(text, str) or not text.strip():
        raise ValueError("type a message first: an empty message has nothing to classify")
    ids = _encode(tokenizer, text, max_tokens)
    if not ids:
        raise ValueError(f"the message {text!r} has no tokens after tokenization; type some words")
    device = next(model.parameters()).device
    from .data import Batch

    batch = Batch(torch.tensor([ids], device=device), torch.tensor([len(ids)], device=device),
                  torch.zeros(1, dtype=torch.long, device=device))
    was_training = model.training
    model.eval()
    try:
        probs = torch.softmax(model(batch.input_ids, batch.lengths).float(), -1)[0].cpu()
        ms = latency_ms(model, batch, reps=reps, warmup=2)
    finally:
        model.train(was_training)
    if len(classes) != len(probs):
        raise ValueError(f"{len(classes)} class names for a {len(probs)}-class model; pass one name per class")
    i = int(probs.argmax())
    return Prediction(classes[i], float(probs[i]), tuple(float(p) for p in probs), ms, len(ids))


@dataclass(frozen=True)
class AdapterChoice:
    """One entry of the playground's dropdown: an adapter folder (None: the base model, no adapter), the names
    of its classes, and how its training data prepared a message (the question task deleted every '?')."""

    path: object
    classes: tuple = ("ham", "spam")
    prepare: Callable | None = None


class AdapterPlayground:
    """One message, several adapters on one base: switch adapter, merge or unmerge, and see the prediction,
    its probability and the latency. ``base`` is the model without LoRA (the "no adapter" choice); ``model``
    is the same base that adapters are loaded onto (:func:`lora_lab.lora.load_adapter`)."""

    def __init__(self, model: nn.Module, base: nn.Module, tokenizer, choices: dict, *, max_tokens: int | None = 512,
                 reps: int = 10):
        if not choices:
            raise ValueError("give at least one choice, e.g. {'base model, no adapter': AdapterChoice(None)}")
        self.model, self.base, self.tokenizer = model, base, tokenizer
        self.choices, self.max_tokens, self.reps = dict(choices), max_tokens, reps
        self.loaded = None  # the adapter now on self.model

    def _model_for(self, name: str, merged: bool) -> nn.Module:
        if name not in self.choices:
            raise ValueError(f"no adapter called {name!r}; choose one of {list(self.choices)}")
        path = self.choices[name].path
        if path is None:  # nothing to merge: the merge switch does not apply
            return self.base
        if self.loaded != name:
            unmerge_lora(self.model)  # load_adapter insists on unmerged layers
            load_adapter(self.model, path)
            self.loaded = name
        (merge_lora if merged else unmerge_lora)(self.model)
        return self.model

    def predict(self, text: str, name: str, merged: bool = False) -> Prediction:
        choice = self.choices.get(name)
        model = self._model_for(name, merged)
        if choice.prepare is not None and isinstance(text, str):
            text = choice.prepare(text)
        return classify_message(model, self.tokenizer, text, choice.classes, max_tokens=self.max_tokens,
                                reps=self.reps)

    def table(self, text: str) -> Report:
        """The message under every choice, unmerged and (for adapters) merged: the static picture."""
        rows = []
        for name, choice in self.choices.items():
            for merged in ((False,) if choice.path is None else (False, True)):
                p = self.predict(text, name, merged)
                rows.append((name, "merged" if merged else ("—" if choice.path is None else "unmerged"), p.label,
                             f"{p.probability:.3f}", f"{p.latency_ms:.1f} ms"))
        if any(c.path is not None for c in self.choices.values()):
            unmerge_lora(self.model)
        head = ("choice", "weights", "prediction", "probability", "latency")
        text_rows = [head] + rows
        widths = [max(len(str(r[i])) for r in text_rows) for i in range(len(head))]
        txt = f"message: {text!r}\n" + "\n".join("  ".join(str(v).ljust(wd) for v, wd in zip(r, widths))
                                                 for r in text_rows)
        html = (f"<p>message: <i>{escape(text)}</i></p><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
                + "</table>")
        return Report(html, txt)

    def report(self, text: str, name: str, merged: bool = False) -> Report:
        p = self.predict(text, name, merged)
        probs = ", ".join(f"{c} {q:.3f}" for c, q in zip(self.choices[name].classes, p.probabilities))
        if self.choices[name].path is None:
            weights = " (no adapter, so nothing to merge)"
        else:
            weights = " (merged into the weights)" if merged else " (unmerged: two extra small matmuls per layer)"
        txt = (f"{name}{weights}: {p.label} with probability {p.probability:.3f} ({probs}); {p.tokens} tokens, "
               f"median latency {p.latency_ms:.1f} ms over {self.reps} runs")
        html = (f'<div style="font-size:15px"><b>{escape(p.label)}</b> with probability <b>{p.probability:.3f}</b> '
                f"({escape(probs)})<br>{escape(name + weights)}; {p.tokens} tokens; median latency "
                f"<b>{p.latency_ms:.1f} ms</b> over {self.reps} runs</div>")
        return Report(html, txt)


def message_playground(playground: AdapterPlayground, text: str = "", choice: str | None = None, *,
                       show: bool = True) -> Interactive:
    """A text box, a dropdown of the adapters (and the base model), and a merge toggle, wired to
    :meth:`AdapterPlayground.report`. Press Enter (or leave the box) to classify."""
    w = _ipywidgets()
    names = list(playground.choices)
    style = {"description_width": "initial"}
    controls = {
        "text": w.Text(value=text, placeholder="type a message and press Enter", description="message",
                       continuous_update=False, style=style, layout=w.Layout(width="90%")),
        "name": w.Dropdown(options=names, value=choice or names[-1], description="adapter", style=style),
        "merged": w.ToggleButton(value=False, description="merged", icon="compress",
                                 tooltip="fold the adapter into the weights (W + scaling·(AB)ᵀ) or take it out"),
    }
    return interactive(lambda text, name, merged: playground.report(text, name, merged), controls, show=show)
