"""Every exercise check: the right answer passes, typical wrong answers fail, and the verdict is a bool."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from lora_lab.course import exercises as ex

NOT_ANSWERS = [None, "42", True, [1, 2], float("nan")]


def verdict(fn, *args, **kwargs) -> bool:
    out = fn(*args, **kwargs)
    assert type(out) is bool, f"{fn.__name__} returned {type(out).__name__}, not bool"
    return out


def assert_checks(fn, right, wrong, *args, **kwargs):
    """``fn(answer, *args)``: every ``right`` passes, every ``wrong`` (and every non-answer) fails."""
    for r in right:
        assert verdict(fn, r, *args, **kwargs), f"{fn.__name__} rejected the right answer {r!r}"
    for w in list(wrong) + NOT_ANSWERS:
        assert not verdict(fn, w, *args, **kwargs), f"{fn.__name__} accepted the wrong answer {w!r}"


def test_check_prints_and_returns_bool(capsys):
    assert ex.check(np.bool_(True), "h") is True
    assert ex.check(torch.tensor(False), "the hint") is False
    out = capsys.readouterr().out
    assert "✅" in out and "the hint" in out


# --- notebook 1 ----------------------------------------------------------------------------------
def test_check_storage():
    m, n, k = 512, 384, 20
    right = k * (m + n + 1)
    assert_checks(ex.check_storage, [right, float(right), np.int64(right), torch.tensor(right)],
                  [k * (m + n), m * n, right + 1, right - 1, (k + 1) * (m + n + 1), 100 * right / (m * n)], m, n, k)


def test_check_storage_hint_names_the_missing_singular_values(capsys):
    ex.check_storage(20 * (512 + 384), 512, 384, 20)
    assert "singular values" in capsys.readouterr().out


def test_check_eckart_young():
    g = torch.Generator().manual_seed(0)
    S = torch.linalg.svdvals(torch.randn(30, 20, generator=g, dtype=torch.float64))
    k = 7
    right = float(torch.sqrt((S[k:] ** 2).sum()))
    wrong = [float((S[k:] ** 2).sum()),                      # no square root
             float(torch.sqrt((S[k + 1:] ** 2).sum())),      # off by one
             float(torch.sqrt((S[k - 1:] ** 2).sum())),      # off by one the other way
             float(S[k]),                                    # spectral-norm error
             float(torch.sqrt((S[:k] ** 2).sum())),          # the kept values
             right / float(torch.linalg.norm(S))]            # relative error
    assert_checks(ex.check_eckart_young, [right, torch.tensor(right), np.float32(right)], wrong, S, k)


def test_check_eckart_young_hints(capsys):
    S = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    ex.check_eckart_young(float((S[2:] ** 2).sum()), S, 2)
    assert "square root" in capsys.readouterr().out
    ex.check_eckart_young(float(torch.sqrt((S[3:] ** 2).sum())), S, 2)
    assert "off by one" in capsys.readouterr().out


# --- notebook 2 ----------------------------------------------------------------------------------
def test_check_lora_params():
    right = 8 * (1024 + 4096)
    assert_checks(ex.check_lora_params, [right], [1024 * 4096, 8 * 1024 * 4096, 8 * 1024, 8 * 4096, right + 8,
                                                  16 * (1024 + 4096), 4 * right], 1024, 4096, 8)


def test_check_scaling():
    assert_checks(ex.check_scaling, [0.5, 8 / 16], [8, 16 / 8, 8 / math.sqrt(16), 50.0], 16, 8)
    assert_checks(ex.check_scaling, [2.0], [0.5, 8, 8 / 16], 16, 8, use_rslora=True)


def test_check_alpha_conversion():
    assert verdict(ex.check_alpha_conversion, 8, 128, raw_alpha=8, rank=16)
    assert verdict(ex.check_alpha_conversion, 8.0, torch.tensor(128.0), raw_alpha=8, rank=16)
    for scaling, alpha in [(0.5, 128),     # scaling computed with alpha/rank
                           (8, 8),         # the same alpha in lora_lab
                           (8, 0.5),       # alpha divided instead of multiplied
                           (8, 32),        # alpha * sqrt(rank): the rsLoRA conversion
                           (8, 129),       # off by one
                           (None, 128), (8, None), (8, -128)]:
        assert not verdict(ex.check_alpha_conversion, scaling, alpha, raw_alpha=8, rank=16), (scaling, alpha)


def test_check_alpha_conversion_checks_the_learners_value_not_a_constant():
    # a different textbook run: raw alpha 4 at rank 8 -> scaling 4, alpha 32
    assert verdict(ex.check_alpha_conversion, 4, 32, raw_alpha=4, rank=8)
    assert not verdict(ex.check_alpha_conversion, 8, 128, raw_alpha=4, rank=8)


def test_check_optimizer_state_bytes():
    n = 19_660_800
    assert_checks(ex.check_optimizer_state_bytes, [8 * n, float(8 * n)],
                  [4 * n, 2 * n, 16 * n, 64 * n, 8 * n / 2**20, 8 * n / 2**30, 8 * n + 1], n)


def test_check_optimizer_state_bytes_accepts_the_head_too_and_says_which_count(capsys):
    # notebook 2's calculator counts the 2-class head as trainable (GPT-2 XL: 1600 * 2 + 2): both counts are right
    n, h = 19_660_800, 1600 * 2 + 2
    assert_checks(ex.check_optimizer_state_bytes, [8 * n, 8 * (n + h)],
                  [4 * n, 4 * (n + h), 2 * (n + h), 64 * (n + h), 8 * (n + h) / 2**20, 8 * h, 8 * (n + h) + 1,
                   8 * (n + 2 * h)], n, head_params=h)
    capsys.readouterr()
    ex.check_optimizer_state_bytes(8 * n, n, head_params=h)
    assert "LoRA parameters alone" in capsys.readouterr().out
    ex.check_optimizer_state_bytes(8 * (n + h), n, head_params=h)
    assert f"{h:,} head" in capsys.readouterr().out
    ex.check_optimizer_state_bytes(8 * h, n, head_params=h)
    assert "head alone" in capsys.readouterr().out
    ex.check_optimizer_state_bytes(4 * (n + h), n, head_params=h)
    assert "two moments" in capsys.readouterr().out
    assert not verdict(ex.check_optimizer_state_bytes, 8 * (n + h), n)  # without head_params: only the LoRA count


# --- notebook 3 ----------------------------------------------------------------------------------
def test_check_last_token_index():
    lengths = [5, 12, 1]
    right = [torch.tensor([4, 11, 0]), [4, 11, 0], np.array([4, 11, 0]), torch.tensor([4.0, 11.0, 0.0])]
    wrong = [torch.tensor([5, 12, 1]),      # off by one
             torch.tensor([3, 10, -1]),     # off by one the other way
             torch.tensor([11, 4, 0]),      # wrong order
             torch.tensor([4, 11]),         # missing a row
             torch.tensor([[4, 11, 0]]),    # wrong shape
             11]
    assert_checks(ex.check_last_token_index, right, wrong, lengths)


def test_check_split_sizes():
    assert_checks(ex.check_split_sizes, [(1400, 200, 400), [1400, 200, 400], np.array([1400, 200, 400])],
                  [(70, 10, 20), (0.7, 0.1, 0.2), (1400, 200), (400, 200, 1400), (700, 100, 200),
                   (1401, 200, 399), 2000], 2000)
    # where int() and round() differ (the course's 1,494 balanced rows): 1045.8 -> 1045, 149.4 -> 149
    assert_checks(ex.check_split_sizes, [(1045, 149, 300)], [(1046, 149, 299), (1045, 150, 299)], 1494)


@pytest.mark.parametrize("answer, n_total", [((1400, 400, 200), 2000), ([1045, 300, 149], 1494)])
def test_check_split_sizes_names_validation_and_test_swapped(answer, n_total, capsys):
    assert not verdict(ex.check_split_sizes, answer, n_total)
    out = capsys.readouterr().out
    assert "swapped" in out and "(train, validation, test)" in out and "int()" not in out, out


def test_check_split_sizes_names_another_order(capsys):
    assert not verdict(ex.check_split_sizes, (200, 1400, 400), 2000)
    out = capsys.readouterr().out
    assert "wrong order" in out and "int()" not in out, out


@pytest.fixture(scope="module")
def tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def test_check_first_token_pooling(tiny_bert):
    from lora_lab.models.minilm import MiniLMClassifier

    class CLS(MiniLMClassifier):  # the right answer
        def forward(self, input_ids, lengths=None):
            mask = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
            return self.classifier(self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state[:, 0])

    class CLSNoMask(MiniLMClassifier):  # first token, but padding attended to
        def forward(self, input_ids, lengths=None):
            return self.classifier(self.encoder(input_ids=input_ids).last_hidden_state[:, 0])

    class LastReal(MiniLMClassifier):  # GPT-2's rule applied to an encoder
        def forward(self, input_ids, lengths=None):
            mask = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
            h = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            return self.classifier(h[torch.arange(len(h)), lengths - 1])

    class Broken(MiniLMClassifier):
        def forward(self, input_ids, lengths=None):
            raise RuntimeError("oops")

    ids = torch.randint(1, 100, (3, 10), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([10, 4, 7])
    ids[1, 4:] = 0
    ids[2, 7:] = 0

    def make(cls):
        torch.manual_seed(2)
        return cls(tiny_bert, num_classes=2)

    assert verdict(ex.check_first_token_pooling, make(CLS), ids, lengths)
    for wrong in (MiniLMClassifier, CLSNoMask, LastReal, Broken):
        assert not verdict(ex.check_first_token_pooling, make(wrong), ids, lengths), wrong.__name__
    assert not verdict(ex.check_first_token_pooling, None, ids, lengths)


# --- notebook 6 ----------------------------------------------------------------------------------
def test_check_merged_weight_needs_the_scaling_and_the_transpose():
    from lora_lab.lora import LinearWithLoRA

    torch.manual_seed(0)
    L = LinearWithLoRA(nn.Linear(6, 4), rank=2, alpha=8)  # scaling 4: a missing scaling is visible
    assert L.lora.scaling == 4
    with torch.no_grad():
        L.lora.B.normal_()
    W, A, B, s = L.linear.weight, L.lora.A, L.lora.B, L.lora.scaling  # still requiring grad: must not crash
    right = (W + s * (A @ B).T).detach()
    wrong = [(W + (A @ B).T).detach(),           # missing scaling
             (W.T + s * (A @ B)).detach(),       # transposed result
             W.detach(),                         # update forgotten
             (W + s * (A @ B).T / 2).detach(),   # alpha/(2 rank)
             (W - s * (A @ B).T).detach(),       # unmerge, not merge
             torch.zeros(1)]                     # the notebook's placeholder
    assert_checks(ex.check_merged_weight, [right, right.numpy()], wrong, W, A, B, s)
    # the merged layer itself gives the right answer
    L.merge()
    assert verdict(ex.check_merged_weight, L.linear.weight, W.detach() - s * (A @ B).T.detach(), A, B, s)


def test_check_merged_weight_square_transpose_fails():
    torch.manual_seed(0)
    W, A, B = torch.randn(5, 5), torch.randn(5, 2), torch.randn(2, 5)
    assert not verdict(ex.check_merged_weight, W + 3 * (A @ B), W, A, B, 3.0)  # (A @ B) not transposed


# --- notebooks 5 / 7 -----------------------------------------------------------------------------
def test_check_delta_rank():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(20, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 30, generator=g, dtype=torch.float64)
    assert_checks(ex.check_delta_rank, [3, 3.0, torch.tensor(3)], [2, 4, 20, 30, 0], delta)


def test_check_allreduce_bytes():
    n = 2_359_296 + 768 * 2 + 2
    assert_checks(ex.check_allreduce_bytes, [4 * n], [n, 8 * n, 12 * n, 32 * n, 4 * n / 2**20, 4 * (n - 2)], n)
    assert_checks(ex.check_allreduce_bytes, [2 * n], [4 * n, n], n, bytes_per_value=2)


# --- notebooks 4, 5, 8 ---------------------------------------------------------------------------
def test_check_trainable_fraction():
    from lora_lab.lora import count_parameters, mark_only_lora_trainable, replace_linear_with_lora

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    model.classifier = nn.Linear(32, 2)
    replace_linear_with_lora(model, rank=2, alpha=2)
    mark_only_lora_trainable(model)
    pc = count_parameters(model)
    share = pc.trainable / pc.total
    assert 0 < share < 1
    assert_checks(ex.check_trainable_fraction, [share, torch.tensor(share)],
                  [100 * share, pc.trainable, 1 - share, pc.total / pc.trainable,
                   (pc.trainable - 66) / pc.total],  # the head left out
                  model)


def test_check_checkpoints_per_full():
    adapter, full = 9_443_336, 497_765_384
    assert_checks(ex.check_checkpoints_per_full, [full // adapter], [full / adapter, full // adapter + 1,
                                                                      adapter / full, full - adapter], adapter, full)


def test_check_lora_params_total():
    shapes = [(768, 2304), (768, 768)] * 12
    right = sum(16 * (i + o) for i, o in shapes)
    assert_checks(ex.check_lora_params_total, [right],
                  [16 * (768 + 2304),                  # one layer
                   right + 16 * (768 + 2),             # the head counted as LoRA
                   sum(i * o for i, o in shapes),      # full weights
                   right // 16,                        # rank forgotten
                   right - 16 * (768 + 768)],          # a layer missing
                  shapes, rank=16)
    minilm = [(384, 384)] * 4 * 6
    assert_checks(ex.check_lora_params_total, [147_456], [24_576, 6_144, 147_456 * 2], minilm, rank=8)


# --- notebook 10 ----------------------------------------------------------------------------------
def test_check_train_test_gap():
    train, test = 1034 / 1045, 289 / 300  # a run that did not fit all its training messages
    right = 100 * (train - test)
    assert_checks(ex.check_train_test_gap, [right, round(100 * train, 2) - round(100 * test, 2), np.float32(right)],
                  [train - test,            # a share, not points
                   -right,                  # test minus train
                   100 - 100 * test,        # as if every training message were right
                   100 * train, 100 * test,  # one accuracy
                   1034 - 289, right + 0.5], train, test)


def test_check_train_test_gap_hints(capsys):
    train, test = 1034 / 1045, 289 / 300
    for answer, words in [(train - test, "points"), (100 * (test - train), "upside down"),
                          (100 - 100 * test, "every training message")]:
        ex.check_train_test_gap(answer, train, test)
        assert words in capsys.readouterr().out, answer


# the full split of notebook 10's offline results, test accuracy in points: rank 64 and rank 8, per seed
RANK64 = {123: 97.0 + 1 / 3, 124: 94.0 + 2 / 3, 125: 97.0 + 1 / 3}
RANK8 = {123: 96.0 + 1 / 3, 124: 97.0 + 2 / 3, 125: 96.0 + 1 / 3}


def _interval(a, b, t=4.303, ddof=1, root_n=True, paired_by_seed=True):
    d = np.array([a[s] - b[s] for s in a])
    n = len(d)
    sd = (np.std(d, ddof=ddof) if paired_by_seed
          else math.sqrt(np.var(list(a.values()), ddof=1) + np.var(list(b.values()), ddof=1)))
    half = t * sd / (math.sqrt(n) if root_n else 1)
    return (d.mean(), d.mean() - half, d.mean() + half)


def test_check_paired_interval():
    from lora_lab.experiments.paired import paired

    p = paired(RANK64, RANK8)
    right = (p.mean, p.low, p.high)
    assert np.allclose(right, _interval(RANK64, RANK8), atol=1e-9)
    m, lo, hi = right
    wrong = [(-m, -hi, -lo),                              # rank 8 minus rank 64
             _interval(RANK64, RANK8, t=1.96),            # the normal quantile with 3 seeds
             _interval(RANK64, RANK8, ddof=0),            # sd divided by n
             _interval(RANK64, RANK8, root_n=False),      # the sd, not the standard error
             _interval(RANK64, RANK8, paired_by_seed=False),  # two independent samples
             (m / 100, lo / 100, hi / 100),               # shares, the values are points
             (lo, m, hi), (m, lo, hi + 1), m]
    assert_checks(ex.check_paired_interval, [right, [round(x, 2) for x in right], np.array(right)], wrong,
                  RANK64, RANK8)
    # shares in, shares out
    shares = ({s: v / 100 for s, v in RANK64.items()}, {s: v / 100 for s, v in RANK8.items()})
    assert verdict(ex.check_paired_interval, (m / 100, lo / 100, hi / 100), *shares)
    assert not verdict(ex.check_paired_interval, right, *shares)


def test_check_paired_interval_hints(capsys):
    names = ("rank 64", "rank 8")
    m, lo, hi = _interval(RANK64, RANK8)
    for answer, words in [((-m, -hi, -lo), "rank 64 minus rank 8"), (_interval(RANK64, RANK8, t=1.96), "4.303"),
                          (_interval(RANK64, RANK8, ddof=0), "n - 1"), (_interval(RANK64, RANK8, root_n=False), "√n"),
                          (_interval(RANK64, RANK8, paired_by_seed=False), "pair them by seed"),
                          ((lo, m, hi), "(mean, low, high)")]:
        ex.check_paired_interval(answer, RANK64, RANK8, names=names)
        assert words in capsys.readouterr().out, answer


def _phi_matrices():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(32, 2, generator=g)
    A_small = torch.cat([3 * shared, torch.randn(32, 2, generator=g)], 1)
    A_big = torch.cat([3 * shared @ torch.randn(2, 2, generator=g), torch.randn(32, 6, generator=g)], 1)
    return A_small, A_big


def test_check_subspace_similarity():
    from lora_lab.experiments.measures import random_phi, subspace_similarity

    A1, A2 = _phi_matrices()
    i, j = 2, 4
    grid = subspace_similarity(A1, A2)
    U1, U2 = torch.linalg.svd(A1, full_matrices=False).U, torch.linalg.svd(A2, full_matrices=False).U
    sq = float(((U1[:, :i].T @ U2[:, :j]) ** 2).sum())
    right = sq / min(i, j)
    assert math.isclose(right, float(grid[i - 1, j - 1]), rel_tol=1e-5)
    wrong = [math.sqrt(sq) / min(i, j),                                          # not squared
             sq / max(i, j),                                                     # max, not min
             sq,                                                                 # not divided
             float(((A1[:, :i].T @ A2[:, :j]) ** 2).sum()) / min(i, j),          # A's columns, not U's
             float(((U1[:, :j].T @ U2[:, :i]) ** 2).sum()) / min(i, j),          # i and j swapped
             float(grid[i, j]), float(grid[i - 2, j - 2]),                       # off by one in the grid
             random_phi(i, j, 32),                                               # the chance level
             grid]                                                               # the whole grid
    assert_checks(ex.check_subspace_similarity, [right, float(grid[i - 1, j - 1]), grid[i - 1, j - 1]], wrong,
                  A1, A2, i, j)


def test_check_subspace_similarity_hints(capsys):
    A1, A2 = _phi_matrices()
    U1, U2 = torch.linalg.svd(A1, full_matrices=False).U, torch.linalg.svd(A2, full_matrices=False).U
    sq = float(((U1[:, :2].T @ U2[:, :4]) ** 2).sum())
    for answer, words in [(math.sqrt(sq) / 2, "square"), (sq / 4, "min(i, j), not max"), (sq, "divide by min"),
                          (float(((A1[:, :2].T @ A2[:, :4]) ** 2).sum()) / 2, "singular vectors"),
                          (float(((U1[:, :4].T @ U2[:, :2]) ** 2).sum()) / 2, "swapped"), (4 / 32, "chance")]:
        ex.check_subspace_similarity(answer, A1, A2, 2, 4)
        assert words in capsys.readouterr().out, answer


def test_every_check_function_is_tested():
    tested = {name for name in globals() if name.startswith("test_check_")}
    for name in ex.__all__:
        if name.startswith("check_"):
            assert any(t.startswith(f"test_{name}") for t in tested), f"{name} has no test"


# --- an exercise left as the notebook gives it -----------------------------------------------------
def _placeholder_calls():
    """Every check as its notebook cell calls it before the student has written anything."""
    from lora_lab.course import vision

    S = torch.tensor([5.0, 4.0, 3.0])
    W, A, B = torch.randn(3, 5), torch.randn(5, 2), torch.randn(2, 3)
    return {
        "check_storage": lambda: ex.check_storage(None, 512, 384, 20),
        "check_eckart_young": lambda: ex.check_eckart_young(None, S, 1),
        "check_lora_params": lambda: ex.check_lora_params(None, 1024, 4096, 8),
        "check_scaling": lambda: ex.check_scaling(None, 16, 8),
        "check_alpha_conversion": lambda: ex.check_alpha_conversion(None, None, raw_alpha=8, rank=16),
        "check_last_token_index": lambda: ex.check_last_token_index(None, [5, 12, 1]),
        "check_split_sizes": lambda: ex.check_split_sizes(None, 2000),
        "check_first_token_pooling": lambda: ex.check_first_token_pooling(None, torch.ones(1, 3).long(),
                                                                           torch.tensor([3])),
        "check_optimizer_state_bytes": lambda: ex.check_optimizer_state_bytes(None, 100),
        "check_optimizer_state_bytes, head": lambda: ex.check_optimizer_state_bytes(None, 100, head_params=6),
        "check_merged_weight": lambda: ex.check_merged_weight(None, W, A, B, 3.0),
        "check_delta_rank": lambda: ex.check_delta_rank(None, A @ B),
        "check_allreduce_bytes": lambda: ex.check_allreduce_bytes(None, 100),
        "check_trainable_fraction": lambda: ex.check_trainable_fraction(None, nn.Linear(3, 2)),
        "check_checkpoints_per_full": lambda: ex.check_checkpoints_per_full(None, 10, 100),
        "check_lora_params_total": lambda: ex.check_lora_params_total(None, [(4, 4)], rank=2),
        "check_train_test_gap": lambda: ex.check_train_test_gap(None, 0.99, 0.96),
        "check_paired_interval": lambda: ex.check_paired_interval(None, {1: 0.9, 2: 0.8}, {1: 0.85, 2: 0.8}),
        "check_subspace_similarity": lambda: ex.check_subspace_similarity(None, W.T, A, 1, 2),
        "check_conv_as_matrix": lambda: vision.check_conv_as_matrix(None, nn.Conv2d(2, 3, 3)),
        "check_conv_lora_params": lambda: vision.check_conv_lora_params(None, 32, 64, 3, 4),
        "check_alpha_conversion, ...": lambda: ex.check_alpha_conversion(..., ..., raw_alpha=8, rank=16),
    }


@pytest.mark.parametrize("name", list(_placeholder_calls()))
def test_unanswered_exercise_says_not_answered_yet_and_does_not_raise(name, capsys):
    assert verdict(_placeholder_calls()[name]) is False
    out = capsys.readouterr().out
    assert ex.NOT_ANSWERED in out and "hint:" in out, out
    assert "❌" not in out, f"{name}: an unanswered exercise is not a wrong answer: {out}"


def test_every_check_has_a_placeholder_case():
    names = set(_placeholder_calls())
    assert {n for n in ex.__all__ if n.startswith("check_")} <= names


def test_a_wrong_answer_is_not_reported_as_unanswered(capsys):
    assert not ex.check_storage(7, 512, 384, 20)
    assert not ex.check_alpha_conversion(8, None, raw_alpha=8, rank=16)  # half answered: still not answered
    out = capsys.readouterr().out.splitlines()
    assert "❌ not yet" in out[0] and ex.NOT_ANSWERED not in out[0]
    assert ex.NOT_ANSWERED in out[1]


def test_untouched_first_token_template_is_not_answered(tiny_bert, capsys):
    from lora_lab.models.minilm import MiniLMClassifier

    class CLSClassifier(MiniLMClassifier):  # notebook 3's template, exactly as given
        def forward(self, input_ids, lengths=None):
            return super().forward(input_ids, lengths)

    ids, lengths = torch.randint(1, 100, (2, 6), generator=torch.Generator().manual_seed(0)), torch.tensor([6, 3])
    torch.manual_seed(0)
    assert not verdict(ex.check_first_token_pooling, CLSClassifier(tiny_bert, num_classes=2), ids, lengths)
    assert ex.NOT_ANSWERED in capsys.readouterr().out
