"""The one rule for "is this difference real?" (lora_lab.experiments.paired): decides when the seeds agree,
refuses to when they do not, and names what it cannot do."""
import math

import pytest

from lora_lab.experiments.paired import T_975, paired

N_TEST = 300  # one test message = 1/300


def test_notebook_5s_old_numbers_are_undecided_with_three_seeds():
    # the committed notebook 5 (before the sweep file): full 97.67/97.33/98.00, LoRA 97.33/94.67/96.33
    full = {123: 0.9767, 124: 0.9733, 125: 0.9800}
    lora = {123: 0.9733, 124: 0.9467, 125: 0.9633}
    p = paired(full, lora, ("full", "lora"), n_test=N_TEST)
    assert p.diffs == pytest.approx((0.0034, 0.0266, 0.0167))
    assert p.low < 0 < p.high and p.verdict == "undecided" and not p.decided
    assert "3 seeds cannot decide" in str(p) and "+1.56 points" in str(p)


def test_consistent_differences_decide_and_name_the_winner():
    a = {1: 0.97, 2: 0.98, 3: 0.975, 4: 0.972, 5: 0.978}
    b = {s: v - 0.02 - 0.001 * s for s, v in a.items()}
    p = paired(a, b, ("lora", "full"), n_test=N_TEST)
    assert p.verdict == "lora better" and p.low > 0
    assert paired(b, a, ("full", "lora"), n_test=N_TEST).verdict == "lora better"


def test_a_consistent_difference_below_one_test_message_is_not_called_better():
    a = {1: 0.5010, 2: 0.5011, 3: 0.5012}
    b = {1: 0.5000, 2: 0.5000, 3: 0.5000}
    p = paired(a, b, n_test=N_TEST)
    assert p.low > 0 and p.verdict == "equivalent"
    assert paired(a, b).verdict == "a better"  # with no minimum effect, any consistent difference counts


def test_exactly_one_test_message_counts_despite_float_rounding():
    a = {s: (290 + k) / 300 for s, k in zip((1, 2, 3), (1, 2, 3))}
    b = {s: (289 + k) / 300 for s, k in zip((1, 2, 3), (1, 2, 3))}
    assert paired(a, b, n_test=300).verdict == "a better"


def test_identical_runs_are_equivalent_and_one_seed_decides_nothing():
    same = {1: 0.9, 2: 0.8, 3: 0.7}
    assert paired(same, dict(same), n_test=N_TEST).verdict == "equivalent"
    one = paired({1: 0.99}, {1: 0.5}, n_test=N_TEST)
    assert one.verdict == "undecided" and one.low is None and "no interval from 1 seed" in str(one)


def test_only_common_seeds_count_and_bad_input_is_named():
    p = paired({1: 0.9, 2: 0.9, 9: 0.1}, {1: 0.8, 2: 0.8, 7: 0.99}, n_test=N_TEST)
    assert p.seeds == (1, 2)
    with pytest.raises(ValueError, match="share no seed"):
        paired({1: 0.9}, {2: 0.9})
    with pytest.raises(ValueError, match="not all finite"):
        paired({1: math.nan}, {1: 0.9})
    with pytest.raises(ValueError, match="min_effect"):
        paired({1: 0.9}, {1: 0.9}, min_effect=-1)


def test_the_interval_is_the_textbook_paired_t_interval():
    d = [0.01, 0.03, 0.02]
    p = paired({i: x for i, x in enumerate(d)}, {i: 0.0 for i in range(3)})
    sd = 0.01  # sample sd of 1, 3, 2 (x 0.01)
    assert p.high - p.mean == pytest.approx(T_975[1] * sd / math.sqrt(3))
    assert T_975[1] == 4.303 and T_975[-1] == 2.042


def test_a_consistent_difference_below_the_minimum_effect_is_named_as_such():
    a = {1: 0.9720, 2: 0.9725, 3: 0.9730}
    b = {1: 0.9700, 2: 0.9700, 3: 0.9700}
    p = paired(a, b, ("x", "y"), n_test=300)  # +0.20, +0.25, +0.30 points: a sign, but below one message (0.33)
    assert p.low > 0 and p.high > 1 / 300 and p.verdict == "undecided"
    assert "a difference below the minimum effect of 0.33 points" in str(p) and "cannot decide" not in str(p)
