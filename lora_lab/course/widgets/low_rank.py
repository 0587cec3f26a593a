"""Notebook 1's controls: a matrix's best rank-k approximation (Eckart-Young) and its singular values."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from html import escape

import numpy as np
import torch
from matplotlib.figure import Figure

from .display import Interactive, Report, interactive, ipywidgets_module, new_figure

__all__ = ["LowRank", "RankApprox", "rank_summary", "decaying_matrix", "draw_rank", "draw_spectrum",
           "rank_slider", "spectrum_slider"]


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
    fig, (a0, a1, a2) = new_figure(14, 4.3, 3, gridspec_kw={"width_ratios": [1, 1, 1.35]})
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
    fig, (a1, a2) = new_figure(13, 4.2, 2)
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
    w = ipywidgets_module()
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
    w = ipywidgets_module()
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
