"""Self-checks for the notebooks' exercises: ``check_*(your_answer, ...)`` prints whether it is right
and, if not, a hint - never the answer - and returns ``True`` or ``False``. Worked solutions are in
``notebooks/solutions.ipynb``.

Every check accepts the natural types of an answer (a Python number, a NumPy scalar, a one-element
tensor; a tensor or array for matrix answers) and treats anything else, including ``None``, as "not
yet". Where a typical mistake can be recognised (off by one, a percentage instead of a share, a
missing scaling, bytes vs values, a transposed matrix), the hint names it. ``tests/test_exercises.py``
checks that the right answer passes and the typical wrong ones fail, for every function here.

An exercise left as the notebook gives it (``your_answer = None``, or a template left untouched) is "not
answered yet": the check says so, with the hint, and returns ``False`` without raising, so the student edition
(``make student``: the lessons without outputs or solutions) runs top to bottom.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..lora.model import count_parameters
from ..models.protocol import length_mask

__all__ = ["check", "check_storage", "check_eckart_young", "check_lora_params", "check_scaling",
           "check_alpha_conversion", "check_last_token_index", "check_split_sizes", "check_first_token_pooling",
           "check_optimizer_state_bytes", "check_merged_weight", "check_delta_rank", "check_allreduce_bytes",
           "check_trainable_fraction", "check_checkpoints_per_full", "check_lora_params_total"]


NOT_ANSWERED = "not answered yet"


def check(ok: bool, hint: str, answered: bool = True) -> bool:
    """Print ✅, or the hint (with "not answered yet" when ``answered`` is false: the exercise's placeholder
    is still there); return the verdict as a plain ``bool``."""
    ok = bool(ok)
    if ok:
        print("✅ correct")
    elif not answered:
        print(f"✏️ {NOT_ANSWERED} - hint: {hint}")
    else:
        print(f"❌ not yet - hint: {hint}")
    return ok


def answered(*answers) -> bool:
    """False while any answer is still the notebook's placeholder (``None``, or ``...``)."""
    return not any(a is None or a is Ellipsis for a in answers)


def _number(x) -> float | None:
    """One number as a float, or None for anything that is not a single real number (None, bools,
    strings, sequences, multi-element tensors, NaN)."""
    if x is None or isinstance(x, (bool, np.bool_, str, bytes)):
        return None
    if isinstance(x, torch.Tensor):
        if x.numel() != 1 or x.dtype == torch.bool or x.is_complex():
            return None
        x = x.detach().cpu().item()
    elif isinstance(x, np.ndarray):
        if x.size != 1 or x.dtype == bool:
            return None
        x = x.reshape(()).item()
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def same_number(answer, expected, rtol: float = 0.0) -> bool:
    """``answer`` is one number equal to ``expected`` (exactly, or within ``rtol``)."""
    v = _number(answer)
    if v is None:
        return False
    return v == expected if rtol == 0 else math.isclose(v, expected, rel_tol=rtol, abs_tol=1e-12)


def as_array(x) -> np.ndarray | None:
    if x is None or isinstance(x, (bool, str, bytes)):
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_complex():
            return None
        x = x.to(torch.float64).numpy()
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return None
    return a


def same_matrix(answer, expected, rtol=1e-5, atol=1e-6) -> bool:
    a, e = as_array(answer), as_array(expected)
    return a is not None and e is not None and a.shape == e.shape and bool(np.allclose(a, e, rtol=rtol, atol=atol))


# --- notebook 1 ----------------------------------------------------------------------------------
def check_storage(answer, m: int, n: int, k: int) -> bool:
    """Numbers stored by a rank-k truncated SVD of an m x n matrix (U_k, the k singular values, V_k)."""
    expected = k * (m + n + 1)
    if same_number(answer, expected):
        return check(True, "")
    if same_number(answer, k * (m + n)):
        hint = "close: you stored U_k and V_k; the k singular values need storing too"
    elif same_number(answer, m * n):
        hint = "that is the full matrix; count U_k (m x k), the k singular values and V_k (n x k)"
    else:
        hint = "U_k is m x k, V_k is n x k, and there are k singular values"
    return check(False, hint, answered=answered(answer))


def check_eckart_young(answer, singular_values, k: int) -> bool:
    """Frobenius error of the best rank-k approximation, from the singular values alone."""
    s = np.sort(np.abs(as_array(singular_values).ravel()))[::-1]
    expected = math.sqrt(float((s[k:] ** 2).sum()))
    if same_number(answer, expected, rtol=1e-5):
        return check(True, "")
    if same_number(answer, float((s[k:] ** 2).sum()), rtol=1e-5):
        hint = "you have the sum of the squares: the Frobenius norm is its square root"
    elif same_number(answer, math.sqrt(float((s[k + 1:] ** 2).sum())), rtol=1e-5) or \
            same_number(answer, math.sqrt(float((s[k - 1:] ** 2).sum())), rtol=1e-5):
        hint = "off by one: a rank-k approximation keeps s[0] .. s[k-1] (Python counts from 0); drop the rest"
    elif same_number(answer, float(s[k]), rtol=1e-5):
        hint = "s[k] alone is the error in the spectral (2-)norm; the Frobenius error uses every dropped value"
    else:
        hint = "the error is built from the singular values you dropped: sqrt of the sum of their squares"
    return check(False, hint, answered=answered(answer))


# --- notebook 2 ----------------------------------------------------------------------------------
def check_lora_params(answer, in_dim: int, out_dim: int, rank: int) -> bool:
    """Parameters LoRA adds to one ``Linear(in_dim, out_dim)``: A (in x r) and B (r x out)."""
    expected = rank * (in_dim + out_dim)
    if same_number(answer, expected):
        return check(True, "")
    if same_number(answer, in_dim * out_dim):
        hint = "that is the frozen weight's size; count the two small matrices A and B"
    elif same_number(answer, rank * in_dim * out_dim):
        hint = "A and B are added to each other's counts, not multiplied"
    else:
        hint = "A is in_dim x rank and B is rank x out_dim"
    return check(False, hint, answered=answered(answer))


def check_scaling(answer, rank: int, alpha: float, use_rslora: bool = False) -> bool:
    """The factor ``lora_lab`` multiplies the update by: alpha/rank, or alpha/sqrt(rank) with rsLoRA."""
    expected = alpha / math.sqrt(rank) if use_rslora else alpha / rank
    if same_number(answer, expected, rtol=1e-9):
        return check(True, "")
    if same_number(answer, alpha, rtol=1e-9) and rank != 1:
        hint = "raw alpha is the textbook's factor; lora_lab divides it by the rank (rsLoRA: by sqrt(rank))"
    elif same_number(answer, rank / alpha, rtol=1e-9):
        hint = "upside down: alpha is on top"
    else:
        hint = "LoRA scales by alpha/rank; rsLoRA by alpha/sqrt(rank)"
    return check(False, hint, answered=answered(answer))


def check_alpha_conversion(your_scaling, your_alpha, raw_alpha: float, rank: int) -> bool:
    """A textbook run multiplied its update by raw ``raw_alpha`` at ``rank``. ``your_scaling``: the factor
    it used; ``your_alpha``: the alpha that gives ``lora_lab`` (alpha/rank) the same factor at that rank."""
    ok_scaling = same_number(your_scaling, raw_alpha, rtol=1e-9)
    a = _number(your_alpha)
    ok_alpha = a is not None and a > 0 and math.isclose(a / rank, raw_alpha, rel_tol=1e-9)
    if ok_scaling and ok_alpha:
        return check(True, "")
    if not ok_scaling:
        if same_number(your_scaling, raw_alpha / rank, rtol=1e-9):
            hint = "your_scaling: alpha/rank is lora_lab's rule; the textbook multiplied by alpha itself"
        else:
            hint = "your_scaling: the textbook code computes alpha * (x @ A @ B)"
    elif a is None:
        hint = "your_alpha: set it to a number"
    elif math.isclose(a, raw_alpha, rel_tol=1e-9):
        hint = "your_alpha: the same alpha gives lora_lab a factor alpha/rank, rank times smaller"
    else:
        hint = f"your_alpha: lora_lab would scale by {a:g}/{rank} = {a / rank:g}; solve alpha/rank = your_scaling"
    return check(False, hint, answered=answered(your_scaling, your_alpha))


def check_optimizer_state_bytes(answer, trainable_params: int) -> bool:
    """Bytes of AdamW state: two fp32 moments per trainable parameter."""
    n = trainable_params
    if same_number(answer, 8 * n):
        return check(True, "")
    if same_number(answer, 4 * n):
        hint = "AdamW keeps two moments per parameter, not one"
    elif same_number(answer, 2 * n):
        hint = "that counts values; each fp32 value takes 4 bytes"
    elif same_number(answer, 64 * n):
        hint = "that is bits; the question asks for bytes"
    elif same_number(answer, 8 * n / 2**20, rtol=1e-9) or same_number(answer, 8 * n / 2**30, rtol=1e-9) or \
            same_number(answer, 8 * n / 1e6, rtol=1e-9):
        hint = "give plain bytes, not MiB/GiB/MB"
    else:
        hint = "AdamW keeps two fp32 numbers (first and second moment) per trainable parameter"
    return check(False, hint, answered=answered(answer))


# --- notebook 3 ----------------------------------------------------------------------------------
def check_last_token_index(answer, lengths) -> bool:
    """Position of each row's last real token in a right-padded batch (a tensor or list of ints)."""
    expected = torch.as_tensor(lengths) - 1
    got = as_array(answer)
    if got is not None and got.shape == tuple(expected.shape) and np.array_equal(got, expected.numpy()):
        return check(True, "")
    if got is not None and got.shape == tuple(expected.shape) and np.array_equal(got, expected.numpy() + 1):
        hint = "off by one: positions count from 0, so a row of n real tokens ends at position n - 1"
    elif got is not None and got.shape != tuple(expected.shape):
        hint = f"give one position per row: {len(expected)} numbers"
    else:
        hint = "positions count from 0; a row of n real tokens has its last real token at position n - 1"
    return check(False, hint, answered=answered(answer))


def check_split_sizes(answer, n_total: int, fractions=(0.7, 0.1)) -> bool:
    """(train, validation, test) sizes of ``n_total`` balanced rows split like ``balanced_split``."""
    n_train, n_val = int(n_total * fractions[0]), int(n_total * fractions[1])
    expected = (n_train, n_val, n_total - n_train - n_val)
    vals = None
    if isinstance(answer, (tuple, list, np.ndarray, torch.Tensor)) and len(answer) == 3:
        vals = [_number(v) for v in answer]
    if vals is not None and all(v is not None for v in vals) and tuple(vals) == expected:
        return check(True, "")
    if vals is not None and all(v is not None for v in vals) and sum(vals) == 100:
        hint = "give numbers of messages, not percentages"
    elif vals is not None and all(v is not None for v in vals) and sum(vals) != n_total:
        hint = f"the three parts must add up to all {n_total:,} balanced messages"
    elif vals is None:
        hint = "give three numbers: (train, validation, test)"
    else:
        hint = "int() rounds down train and validation; the test set takes the rest"
    return check(False, hint, answered=answered(answer))


def check_first_token_pooling(model, input_ids, lengths) -> bool:
    """Is ``model(input_ids, lengths)`` the head applied to the encoder's output at the first token
    ([CLS]), with padding masked out? For a subclass of :class:`lora_lab.models.minilm.MiniLMClassifier`."""
    if model is None or not hasattr(model, "encoder") or not hasattr(model, "classifier"):
        return check(False, "pass an instance of your classifier (a MiniLMClassifier subclass)",
                     answered=model is not None)
    mask = length_mask(input_ids, lengths)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            got = model(input_ids, lengths)
            h = model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            expected = model.classifier(h[:, 0])
            unmasked = model.classifier(model.encoder(input_ids=input_ids).last_hidden_state[:, 0])
            m = mask.unsqueeze(-1).to(h.dtype)
            mean = model.classifier((h * m).sum(1) / m.sum(1).clamp(min=1))
    except Exception as e:  # noqa: BLE001 - a learner's forward may fail in any way
        return check(False, f"calling your model failed ({type(e).__name__}: {e})")
    finally:
        model.train(was_training)
    if same_matrix(got, expected, atol=1e-5):
        return check(True, "")
    untouched = same_matrix(got, mean, atol=1e-5)  # the notebook's template: its forward is still mean pooling
    if untouched:
        hint = "that is still the mean over the real tokens; read position 0 of the encoder's output instead"
    elif same_matrix(got, unmasked, atol=1e-5):
        hint = "right position, but without the attention mask the first token also attends to the padding"
    else:
        hint = ("run the encoder with the attention mask (as MiniLMClassifier.forward does), then apply the head "
                "to last_hidden_state[:, 0]")
    return check(False, hint, answered=not untouched)


# --- notebook 6 ----------------------------------------------------------------------------------
def check_merged_weight(answer, W, A, B, scaling: float) -> bool:
    """The merged ``nn.Linear`` weight ``W + scaling * (A @ B)^T``, shaped like W (out, in)."""
    W, A, B = (as_array(t) for t in (W, A, B))
    expected = W + scaling * (A @ B).T
    if same_matrix(answer, expected):
        return check(True, "")
    got = as_array(answer)
    if got is not None and got.shape == expected.T.shape and got.shape != expected.shape:
        hint = "shape: nn.Linear stores W as (out, in) while A @ B is (in, out): transpose before adding"
    elif same_matrix(answer, W + (A @ B).T) and scaling != 1:
        hint = "the update is multiplied by the layer's scaling (alpha/rank) before it is added"
    elif same_matrix(answer, expected.T):
        hint = "transposed: the merged weight has W's shape and layout, (out, in)"
    else:
        hint = "nn.Linear stores W as (out, in) while A @ B is (in, out): transpose, scale, add"
    return check(False, hint, answered=answered(answer))


# --- notebooks 5 / 7 -----------------------------------------------------------------------------
def check_delta_rank(answer, delta, tol: float = 1e-6) -> bool:
    expected = int(torch.linalg.matrix_rank(torch.as_tensor(delta, dtype=torch.float64), atol=tol))
    if same_number(answer, expected):
        return check(True, "")
    hint = "count the singular values of delta that are not (numerically) zero"
    if same_number(answer, min(torch.as_tensor(delta).shape)):
        hint = "that is the largest rank a matrix of this shape can have; " + hint
    return check(False, hint, answered=answered(answer))


def check_allreduce_bytes(answer, trainable_params: int, bytes_per_value: int = 4) -> bool:
    """Bytes DDP all-reduces per step: one gradient value per trainable parameter."""
    n = trainable_params
    if same_number(answer, n * bytes_per_value):
        return check(True, "")
    if same_number(answer, n):
        hint = "that counts values; each fp32 gradient value takes 4 bytes"
    elif same_number(answer, 2 * n * bytes_per_value) or same_number(answer, 3 * n * bytes_per_value):
        hint = "only the gradients travel; the optimizer state stays on each process"
    elif same_number(answer, 8 * n * bytes_per_value):
        hint = "that is bits; the question asks for bytes"
    else:
        hint = "DDP syncs one gradient value per trainable parameter, 4 bytes each in fp32"
    return check(False, hint, answered=answered(answer))


# --- notebooks 4, 5, 7 ---------------------------------------------------------------------------
def check_trainable_fraction(answer, model) -> bool:
    """Share of a model's parameters that train (a number between 0 and 1)."""

    pc = count_parameters(model)
    share = pc.trainable / pc.total
    if same_number(answer, share, rtol=1e-4):
        return check(True, "")
    if same_number(answer, 100 * share, rtol=1e-4):
        hint = "that is a percentage; give the share (between 0 and 1)"
    elif same_number(answer, pc.trainable):
        hint = "that is the count; divide it by the total"
    elif same_number(answer, 1 - share, rtol=1e-4):
        hint = "that is the frozen share; the question asks for the trainable one"
    else:
        hint = "divide the trainable count by the total (count_parameters(model) has both); a share, not a percentage"
    return check(False, hint, answered=answered(answer))


def check_checkpoints_per_full(answer, adapter_bytes: int, full_bytes: int) -> bool:
    """How many whole adapter files fit into the bytes of one full checkpoint."""
    expected = full_bytes // adapter_bytes
    if same_number(answer, expected):
        return check(True, "")
    v = _number(answer)
    if v is not None and v != int(v) and int(v) == expected:
        hint = "count whole files: round down (integer division //)"
    elif v is not None and v == expected + 1:
        hint = "one too many: the last file would not fit whole; round down"
    elif v is not None and 0 < v < 1:
        hint = "upside down: divide the full checkpoint's bytes by the adapter's"
    else:
        hint = "how many whole adapter files fit into the bytes of one full checkpoint: integer division"
    return check(False, hint, answered=answered(answer))


def check_lora_params_total(answer, layer_shapes, rank: int) -> bool:
    """LoRA parameters over several layers, given their (in_features, out_features)."""
    shapes = list(layer_shapes)
    expected = sum(rank * (i + o) for i, o in shapes)
    if same_number(answer, expected):
        return check(True, "")
    if len(shapes) > 1 and any(same_number(answer, rank * (i + o)) for i, o in shapes):
        hint = f"that is one layer; add up all {len(shapes)} wrapped layers"
    elif same_number(answer, sum(i * o for i, o in shapes)):
        hint = "that is the frozen weights' size; count rank * (in + out) per layer"
    else:
        hint = "add rank * (in + out) over every wrapped layer; the head is not a LoRA parameter"
    return check(False, hint, answered=answered(answer))
