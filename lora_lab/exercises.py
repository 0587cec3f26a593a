"""Self-checks for the notebooks' exercises: ``check_*(your_answer, ...)`` prints whether it is right
and, if not, a hint - never the answer. Worked solutions are in ``notebooks/solutions.ipynb``."""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["check", "check_storage", "check_eckart_young", "check_lora_params", "check_scaling",
           "check_last_token_index", "check_split_sizes", "check_optimizer_state_bytes", "check_merged_weight",
           "check_delta_rank", "check_allreduce_bytes", "check_trainable_fraction", "check_checkpoints_per_full",
           "check_lora_params_total"]


def check(ok: bool, hint: str) -> bool:
    print("✅ correct" if ok else f"❌ not yet - hint: {hint}")
    return bool(ok)


def _close(a, b, rtol=1e-6, atol=1e-8) -> bool:
    try:
        return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rtol, atol=atol))
    except (TypeError, ValueError):
        return False


# notebook 1
def check_storage(answer, m: int, n: int, k: int) -> bool:
    """Numbers stored by a rank-k truncated SVD of an m x n matrix (U_k, s_k, V_k)."""
    return check(answer == k * (m + n + 1), "U_k is m x k, V_k is n x k, and there are k singular values")


def check_eckart_young(answer, singular_values, k: int) -> bool:
    """Frobenius error of the best rank-k approximation."""
    s = np.asarray(singular_values, dtype=float)
    return check(_close(answer, math.sqrt((s[k:] ** 2).sum()), rtol=1e-5),
                 "the error is built from the singular values you dropped: sqrt of the sum of their squares")


# notebook 2
def check_lora_params(answer, in_dim: int, out_dim: int, rank: int) -> bool:
    return check(answer == rank * (in_dim + out_dim), "A is in_dim x rank and B is rank x out_dim")


def check_scaling(answer, rank: int, alpha: float, use_rslora: bool = False) -> bool:
    expected = alpha / math.sqrt(rank) if use_rslora else alpha / rank
    return check(_close(answer, expected), "LoRA scales by alpha/rank; rsLoRA by alpha/sqrt(rank)")


def check_optimizer_state_bytes(answer, trainable_params: int) -> bool:
    return check(answer == 2 * 4 * trainable_params,
                 "AdamW keeps two fp32 numbers (first and second moment) per trainable parameter")


# notebook 3
def check_last_token_index(answer, lengths) -> bool:
    expected = torch.as_tensor(lengths) - 1
    try:
        ok = torch.equal(torch.as_tensor(answer), expected)
    except (TypeError, RuntimeError, ValueError):
        ok = False
    return check(ok, "positions count from 0; a row of n real tokens has its last real token at position n - 1")


def check_split_sizes(answer, n_total: int, fractions=(0.7, 0.1)) -> bool:
    n_train, n_val = int(n_total * fractions[0]), int(n_total * fractions[1])
    ok = isinstance(answer, (tuple, list)) and tuple(answer) == (n_train, n_val, n_total - n_train - n_val)
    return check(ok,
                 "int() rounds down train and validation; the test set takes the rest")


# notebook 6
def check_merged_weight(answer, W, A, B, scaling: float) -> bool:
    return check(_close(answer, W + scaling * (A @ B).T, rtol=1e-5, atol=1e-6),
                 "nn.Linear stores W as (out, in) while A @ B is (in, out): transpose before adding")


# notebook 5 / 7
def check_delta_rank(answer, delta, tol: float = 1e-6) -> bool:
    expected = int(torch.linalg.matrix_rank(torch.as_tensor(delta, dtype=torch.float64), atol=tol))
    return check(answer == expected, "count the singular values of delta that are not (numerically) zero")


def check_allreduce_bytes(answer, trainable_params: int, bytes_per_value: int = 4) -> bool:
    return check(answer == trainable_params * bytes_per_value, "DDP syncs one gradient value per trainable "
                 "parameter, 4 bytes each in fp32")


# notebooks 4, 5, 7, 8
def check_trainable_fraction(answer, model) -> bool:
    """Share of a model's parameters that train (a number between 0 and 1)."""
    from .lora import count_parameters

    pc = count_parameters(model)
    return check(_close(answer, pc.trainable / pc.total, rtol=1e-4), "divide the trainable count by the total "
                 "(count_parameters(model) has both); a share, not a percentage")


def check_checkpoints_per_full(answer, adapter_bytes: int, full_bytes: int) -> bool:
    return check(answer == full_bytes // adapter_bytes, "how many whole adapter files fit into the bytes of one "
                 "full checkpoint: integer division")


def check_lora_params_total(answer, layer_shapes, rank: int) -> bool:
    """LoRA parameters over several layers, given their (in_features, out_features)."""
    return check(answer == sum(rank * (i + o) for i, o in layer_shapes),
                 "add rank * (in + out) over every wrapped layer; the head is not a LoRA parameter")
