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

from ..experiments.measures import random_phi, subspace_similarity
from ..experiments.paired import T_975, paired
from ..lora.model import count_parameters
from ..models.protocol import length_mask

__all__ = ["check", "check_storage", "check_eckart_young", "check_lora_params", "check_scaling",
           "check_alpha_conversion", "check_last_token_index", "check_split_sizes", "check_first_token_pooling",
           "check_optimizer_state_bytes", "check_merged_weight", "check_delta_rank", "check_allreduce_bytes",
           "check_trainable_fraction", "check_checkpoints_per_full", "check_lora_params_total",
           "check_train_test_gap", "check_paired_interval", "check_subspace_similarity"]


NOT_ANSWERED = "not answered yet"


def check(ok: bool, hint: str, answered: bool = True, note: str = "") -> bool:
    """Print ✅ (followed by ``note``, if any: which of several right answers it was), or the hint (with "not
    answered yet" when ``answered`` is false: the exercise's placeholder is still there); return the verdict as a
    plain ``bool``."""
    ok = bool(ok)
    if ok:
        print(f"✅ correct: {note}" if note else "✅ correct")
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


def _three(answer) -> list[float] | None:
    """Three numbers as floats (a tuple, list, array or tensor of three), or None."""
    if isinstance(answer, (tuple, list, np.ndarray, torch.Tensor)) and len(answer) == 3:
        vals = [_number(x) for x in answer]
        if all(x is not None for x in vals):
            return vals
    return None


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


def check_optimizer_state_bytes(answer, trainable_params: int, head_params: int = 0) -> bool:
    """Bytes of AdamW state: two fp32 moments (8 bytes) per trainable parameter.

    ``trainable_params`` are the LoRA parameters; ``head_params`` those of the classification head, which trains
    in full next to them (notebook 2's calculator counts it). With ``head_params`` given, both counts are right
    answers, the adapters alone and everything that trains, and the ✅ says which one the answer used."""
    n, h = trainable_params, head_params
    counts = {n: f"8 bytes x {n:,}, the LoRA parameters alone"}
    if h:
        counts[n + h] = f"8 bytes x ({n:,} LoRA + {h:,} head), everything that trains (as the calculator counts)"
    for k, note in counts.items():
        if same_number(answer, 8 * k):
            return check(True, "", note=note)

    def any_of(factor, rtol=0.0):
        return any(same_number(answer, factor * k, rtol=rtol) for k in counts)

    if any_of(4):
        hint = "AdamW keeps two moments per parameter, not one"
    elif any_of(2):
        hint = "that counts values; each fp32 value takes 4 bytes"
    elif any_of(64):
        hint = "that is bits; the question asks for bytes"
    elif any_of(8 / 2**20, 1e-9) or any_of(8 / 2**30, 1e-9) or any_of(8 / 1e6, 1e-9):
        hint = "give plain bytes, not MiB/GiB/MB"
    elif h and same_number(answer, 8 * h):
        hint = "that is the head alone; the LoRA parameters train too"
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
    vals = _three(answer)
    if vals is not None and tuple(vals) == expected:
        return check(True, "")
    if vals is not None and (vals[0], vals[2], vals[1]) == expected:
        hint = (f"validation and test are swapped: the order is (train, validation, test), and validation is the "
                f"{fractions[1]:.0%} part, test the remaining {1 - sum(fractions):.0%}")
    elif vals is not None and sorted(vals) == sorted(expected):
        hint = "the right sizes in the wrong order: give (train, validation, test)"
    elif vals is not None and sum(vals) == 100:
        hint = "give numbers of messages, not percentages"
    elif vals is not None and sum(vals) != n_total:
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


# --- notebook 7 ----------------------------------------------------------------------------------
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


# --- notebooks 4, 5, 8 ---------------------------------------------------------------------------
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


# --- notebook 10 ----------------------------------------------------------------------------------
def check_train_test_gap(answer, train_acc: float, test_acc: float) -> bool:
    """The train-test gap of one run in points: 100 x (accuracy on its own training messages - test accuracy),
    from the two accuracies given as shares. Within 0.011 points, for accuracies read off a table rounded to
    two decimals of a percent."""
    expected = 100 * (train_acc - test_acc)
    v = _number(answer)

    def near(x, tol=0.011):
        return v is not None and abs(v - x) <= tol

    if near(expected):
        return check(True, "")
    if near(expected / 100, 0.00011) and expected != 0:
        hint = "that is a share; the gap is in points: multiply by 100"
    elif near(-expected):
        hint = "upside down: the gap is the training accuracy minus the test accuracy"
    elif near(100 * (1 - test_acc)):
        hint = ("100 minus the test accuracy assumes the run got every training message right; this one did not: "
                "subtract the test accuracy from its training accuracy")
    elif near(100 * train_acc) or near(100 * test_acc):
        hint = "that is one of the two accuracies; the gap is their difference"
    else:
        hint = "training accuracy minus test accuracy, both in percent: the difference is in points"
    return check(False, hint, answered=answered(answer))


def check_paired_interval(answer, a, b, names: tuple[str, str] = ("a", "b")) -> bool:
    """``(mean, low, high)``: the mean of the per-seed differences ``a - b`` and their 95% paired t interval,
    ``mean ± t(0.975, n - 1) · sd / √n`` with the sample sd (n - 1), as :func:`lora_lab.experiments.paired.paired`
    computes it; ``a`` and ``b`` map seed -> value (``names`` says what they are, for the hints), and the answer
    is in their units. Within 0.5% of the interval's width (at least 0.011 points, for values read off a
    rounded table)."""
    p = paired(a, b, names)
    seeds = p.seeds
    n = len(seeds)
    if n < 2:
        raise ValueError("a paired interval needs at least 2 seeds that both methods ran")
    d = np.array(p.diffs)
    values = [float(x[s]) for x in (a, b) for s in seeds]
    unit = 0.01 if max(abs(x) for x in values) <= 1 else 1.0  # shares or points
    tol = max(0.005 * (p.high - p.low), 0.011 * unit)
    got = _three(answer)

    def near(triple, scale=1.0):
        return got is not None and all(abs(g - scale * e) <= scale * tol for g, e in zip(got, triple))

    def interval(mean, half):
        return (mean, mean - half, mean + half)

    t = T_975[n - 2] if n - 1 <= len(T_975) else 1.96
    sd = float(d.std(ddof=1))
    if near((p.mean, p.low, p.high)):
        return check(True, "")
    sd_a, sd_b = (float(np.std([float(x[s]) for s in seeds], ddof=1)) for x in (a, b))
    if got is None:
        hint = "give three numbers: (mean, low, high)"
    elif near((-p.mean, -p.high, -p.low)):
        hint = f"the other way round: the differences are {names[0]} minus {names[1]}, seed by seed"
    elif near((p.mean, p.low, p.high), 100) or near((p.mean, p.low, p.high), 0.01):
        hint = "units: give the answer in the units of the values (points stay points, shares stay shares)"
    elif any(near(perm) for perm in ((p.low, p.mean, p.high), (p.low, p.high, p.mean), (p.high, p.mean, p.low),
                                     (p.mean, p.high, p.low), (p.high, p.low, p.mean))):
        hint = "the right numbers in the wrong order: give (mean, low, high)"
    elif near(interval(p.mean, 1.96 * sd / math.sqrt(n))):
        hint = (f"1.96 is the normal distribution's quantile, for many samples; with {n} seeds use Student's t with "
                f"{n - 1} degrees of freedom, t(0.975, {n - 1}) = {t}")
    elif near(interval(p.mean, t * float(d.std(ddof=0)) / math.sqrt(n))):
        hint = "the sample standard deviation of the differences divides by n - 1, not n"
    elif near(interval(p.mean, t * sd)):
        hint = "the half-width is t · sd / √n: divide by the square root of the number of seeds"
    elif near(interval(p.mean, t * math.sqrt((sd_a ** 2 + sd_b ** 2) / n))):
        hint = ("that treats the two methods as independent samples; pair them by seed: take the per-seed "
                "differences first, then their mean and standard deviation")
    elif abs(got[0] - p.mean) <= tol:
        hint = f"the mean is right; the interval is mean ± t(0.975, {n - 1}) · sd / √n, with the sd of the differences"
    else:
        hint = (f"seed by seed, {names[0]} minus {names[1]}; then the mean of those differences ± "
                f"t(0.975, {n - 1}) · sd / √n")
    return check(False, hint, answered=answered(answer))


def check_subspace_similarity(answer, A1, A2, i: int, j: int) -> bool:
    """φ(A1, A2, i, j) = ||U1_iᵀ U2_j||²_F / min(i, j) (Hu et al. 2021, eq. 4) for two ``(d_in, r)`` matrices in
    lora_lab's layout, ``U`` their left-singular vectors: one number, as
    :func:`lora_lab.experiments.measures.subspace_similarity` gives it at ``[i - 1, j - 1]``."""
    A1, A2 = (torch.as_tensor(as_array(x), dtype=torch.float64) for x in (A1, A2))
    grid = subspace_similarity(A1, A2).numpy()
    expected = float(grid[i - 1, j - 1])
    if same_number(answer, expected, rtol=1e-4):
        return check(True, "")
    U1, U2 = (torch.linalg.svd(A, full_matrices=False).U for A in (A1, A2))
    sq = float(((U1[:, :i].T @ U2[:, :j]) ** 2).sum())
    cols = float(((A1[:, :i].T @ A2[:, :j]) ** 2).sum()) / min(i, j)
    swapped = float(((U1[:, :j].T @ U2[:, :i]) ** 2).sum()) / min(i, j) if j <= A1.shape[1] and i <= A2.shape[1] \
        else None
    got = as_array(answer)
    if got is not None and got.size > 1:
        hint = f"give one number, φ(i={i}, j={j}): in the grid subspace_similarity returns, that is [i - 1, j - 1]"
    elif same_number(answer, math.sqrt(sq) / min(i, j), rtol=1e-4):
        hint = "square the Frobenius norm: φ uses ||U1_iᵀ U2_j||²_F"
    elif i != j and same_number(answer, sq / max(i, j), rtol=1e-4):
        hint = "divide by min(i, j), not max(i, j): φ = 1 when the smaller subspace lies inside the larger"
    elif min(i, j) > 1 and same_number(answer, sq, rtol=1e-4):
        hint = "divide by min(i, j): φ is between 0 and 1"
    elif same_number(answer, cols, rtol=1e-4):
        hint = ("A's columns are not orthonormal directions: take the top singular vectors (torch.linalg.svd(A).U, "
                "the left ones for lora_lab's (d_in, r) layout)")
    elif swapped is not None and i != j and same_number(answer, swapped, rtol=1e-4):
        hint = "i and j swapped: i counts the top directions of the first matrix, j those of the second"
    elif any(same_number(answer, float(grid[k, m]), rtol=1e-4) for k in (i - 2, i - 1, i) for m in (j - 2, j - 1, j)
             if (k, m) != (i - 1, j - 1) and 0 <= k < grid.shape[0] and 0 <= m < grid.shape[1]):
        hint = "off by one: the top i directions are U[:, :i], and φ(i, j) sits at [i - 1, j - 1] of the grid"
    elif same_number(answer, random_phi(i, j, A1.shape[0]), rtol=1e-4):
        hint = "that is the chance level max(i, j) / d; compute φ itself from the singular vectors"
    else:
        hint = ("left-singular vectors U of each (d_in, r) matrix; the top i of the first and the top j of the "
                "second; ||U1_iᵀ U2_j||²_F / min(i, j)")
    return check(False, hint, answered=answered(answer))
