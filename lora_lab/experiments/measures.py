"""What a fine-tune changed, measured (notebook 10's claims 2 and 3): sentence embeddings of unrelated text and
their nearest neighbours, GPT-2's perplexity on it, the subspace similarity of learned directions (Hu et al.
2021, section 7.2, eq. 4) and how much of one weight change the top directions of another explain."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..models.protocol import length_mask

__all__ = ["embed", "neighbour_overlap", "forgetting", "perplexity", "subspace_similarity", "random_phi",
           "explained_share", "top_energy_share"]


@torch.no_grad()
def embed(model: nn.Module, loader) -> torch.Tensor:
    """One vector per text: the mean of the final hidden states over its real tokens (all-MiniLM-L6-v2's own
    sentence embedding, and the same formula on GPT-2). ``(n_texts, width)``, in the loader's order."""
    was = model.training
    model.eval()
    out = []
    device = next(model.parameters()).device
    for b in loader:
        b = b.to(device)
        h = model.token_states(b.input_ids, b.lengths).float()
        m = length_mask(b.input_ids, b.lengths).unsqueeze(-1).float()
        out.append(((h * m).sum(1) / m.sum(1)).cpu())
    model.train(was)
    return torch.cat(out)


def neighbour_overlap(before: torch.Tensor, after: torch.Tensor, k: int = 5) -> float:
    """Mean share of each text's ``k`` nearest neighbours (cosine, within the set, itself excluded) that are
    the same before and after: 1.0 when the geometry of the set is unchanged, about ``k / (n - 1)`` when the
    neighbours are shuffled at random."""
    if before.shape != after.shape or before.shape[0] <= k:
        raise ValueError(f"need two (n, width) embeddings of the same texts with n > k={k}, got {tuple(before.shape)} "
                         f"and {tuple(after.shape)}")

    def top(e):
        e = F.normalize(e.double(), dim=1)
        sim = e @ e.T
        sim.fill_diagonal_(-math.inf)
        return sim.topk(k, dim=1).indices

    a, b = top(before), top(after)
    same = [len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)]
    return sum(same) / (k * len(same))


def forgetting(base: torch.Tensor, after: torch.Tensor, k: int = 5) -> dict:
    """How far the embeddings of the unrelated texts moved: ``cos_mean``/``cos_min`` (cosine of each text's
    embedding to the base model's, 1 = unchanged) and ``nn_overlap`` (:func:`neighbour_overlap`)."""
    cos = F.cosine_similarity(base.double(), after.double(), dim=1)
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "nn_overlap": neighbour_overlap(base, after, k)}


@torch.no_grad()
def perplexity(model: nn.Module, ids: list[int], window: int = 128) -> float:
    """Perplexity of a GPT-2 (a classifier or not) as a language model on the token ids ``ids``, read in
    non-overlapping windows of ``window`` tokens. The LM head is the tied token embedding, so it exists for
    every fine-tuning method: logits = hidden states @ wte.weight.T. Lower is better; a method that leaves
    the body alone leaves it unchanged."""
    if not hasattr(model, "hidden_states"):
        raise TypeError(f"perplexity needs a GPT-2 (lora_lab.models.gpt2.GPT), got {type(model).__name__}; "
                        "MiniLM is not a left-to-right language model")
    window = min(window, model.config.block_size)
    chunks = [ids[i:i + window] for i in range(0, len(ids) - 1, window)]
    chunks = [c for c in chunks if len(c) >= 2]
    was = model.training
    model.eval()
    nll, n = 0.0, 0
    for c in chunks:
        x = torch.tensor([c], device=model.transformer.wte.weight.device)
        logits = model.hidden_states(x) @ model.transformer.wte.weight.T
        nll += F.cross_entropy(logits[0, :-1].double(), x[0, 1:], reduction="sum").item()
        n += len(c) - 1
    model.train(was)
    return math.exp(nll / n)


def _basis(M: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning ``M``'s column space, in order of singular value (the left-singular
    vectors ``U`` of ``M = U S V^T``)."""
    return torch.linalg.svd(M.double(), full_matrices=False).U


def subspace_similarity(A1: torch.Tensor, A2: torch.Tensor) -> torch.Tensor:
    """The grid ``phi[i-1, j-1] = ||U1_i^T U2_j||_F^2 / min(i, j)`` of Hu et al. (2021), section 7.2, eq. (4).

    The paper stores ``A`` as ``(r, d_in)`` and takes its *right*-singular vectors, which span the inputs that
    the update reads. ``lora_lab`` stores ``A`` as ``(d_in, r)`` (the transpose), so the same vectors are the
    *left*-singular vectors here; ``U1_i`` are the top ``i`` of them. ``phi`` is 1 when the top-``i`` directions of
    one lie inside the top-``j`` of the other, 0 when they are orthogonal. Pass matrices shaped ``(d_in, r1)`` and
    ``(d_in, r2)``; the result is ``(r1, r2)``."""
    if A1.dim() != 2 or A2.dim() != 2 or A1.shape[0] != A2.shape[0]:
        raise ValueError(f"need two (d_in, r) matrices with the same d_in, got {tuple(A1.shape)} and {tuple(A2.shape)}")
    U1, U2 = _basis(A1), _basis(A2)
    overlap = (U1.T @ U2) ** 2  # (r1, r2): squared cosines between single directions
    cum = overlap.cumsum(0).cumsum(1)  # cum[i-1, j-1] = ||U1_i^T U2_j||_F^2
    i = torch.arange(1, cum.shape[0] + 1, dtype=cum.dtype)[:, None]
    j = torch.arange(1, cum.shape[1] + 1, dtype=cum.dtype)[None]
    return cum / torch.minimum(i, j)


def random_phi(i: int, j: int, d: int) -> float:
    """What :func:`subspace_similarity` gives on average for random subspaces of dimensions ``i`` and ``j`` in
    ``d`` dimensions: ``E||U_i^T U_j||_F^2 = i j / d``, so ``phi = max(i, j) / d``. The chance level to beat."""
    return max(i, j) / d


def top_energy_share(delta: torch.Tensor, ks) -> list[float]:
    """Share of ``||delta||_F^2`` in its own top-``k`` singular directions, for each ``k`` (Eckart-Young: no
    rank-``k`` matrix gets closer to ``delta``; the ceiling for :func:`explained_share`)."""
    s2 = torch.linalg.svdvals(delta.double()) ** 2
    return [float(s2[:k].sum() / s2.sum()) for k in ks]


def explained_share(delta_full: torch.Tensor, delta_lora: torch.Tensor, ks) -> list[float]:
    """How much of full fine-tuning's change ``delta_full`` (``(out, in)``) lies in the top-``k`` directions of
    LoRA's update ``delta_lora``: ``||U_k^T delta_full V_k||_F^2 / ||delta_full||_F^2`` with ``U_k``/``V_k`` the top
    ``k`` left/right singular vectors of ``delta_lora``. 1 when ``delta_full`` lies entirely within them; for random
    directions about ``k^2 / (out * in)``. ``k`` beyond LoRA's rank adds nothing."""
    svd = torch.linalg.svd(delta_lora.double(), full_matrices=False)
    D = delta_full.double()
    total = float((D ** 2).sum())
    out = []
    for k in ks:
        U, V = svd.U[:, :k], svd.Vh[:k].T
        out.append(float(((U.T @ D @ V) ** 2).sum()) / total)
    return out
