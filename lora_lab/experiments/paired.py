"""Is a difference between two methods real? The one rule the whole course uses to answer it.

Two methods trained on the same seeds make *pairs*: seed 123 gives both the same head initialisation and the
same batch order, so the per-seed difference ``a - b`` cancels much of what a seed changes. The rule:

    Take the per-seed differences ``d_i = a_i - b_i``, their mean ``m`` and the 95% paired t interval
    ``m ± t(0.975, n-1) · sd(d) / √n``. Call one method better only when the interval excludes zero **and**
    ``|m|`` is at least the minimum effect (one test message by default: a smaller difference is one the test
    set cannot show). Call them equivalent when the whole interval lies within ± the minimum effect.
    Otherwise the seeds cannot decide, and the verdict says so.

Why this rule: it is the textbook paired t-test (Student 1908; any introductory statistics text), it uses the
pairing, and with 3 seeds it is strict (t = 4.30): the differences must be consistent in sign *and* size. A sign
test cannot decide anything with 3 seeds (its smallest two-sided p-value is 0.25); comparing ranges ("do they
overlap?", "is the difference larger than the spread?") ignores the pairing and has no stated error rate.

Its limits, which every verdict inherits: (1) it assumes the differences are roughly normal, which 3-5 seeds
cannot check; (2) the seeds vary the initialisation and the batch order only: the 300 test messages stay the same,
so the interval says nothing about another test set (a binomial standard error of an accuracy near 97% on
300 messages is about 1 point); (3) "undecided" is not "equal": more seeds may separate the methods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

__all__ = ["Paired", "paired", "T_975", "RULE"]

RULE = ("paired over seeds: the 95% t interval of the per-seed differences must exclude 0 and the mean difference "
        "must be at least one test message to call a method better")

# two-sided 95% quantiles of Student's t, t(0.975, df), for df = 1..30 (standard tables); beyond 30: 1.96
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _t(df: int) -> float:
    return T_975[df - 1] if df <= len(T_975) else 1.96


@dataclass(frozen=True)
class Paired:
    """The comparison of ``a`` with ``b`` over their common seeds (values are shares, e.g. test accuracy 0.97).

    ``diffs`` are ``a - b`` per seed (in ``seeds`` order), ``mean`` their mean, ``low``/``high`` the 95% interval
    (None with fewer than 2 seeds), ``min_effect`` the smallest difference that counts, ``verdict`` one of
    ``"<a> better"``, ``"<b> better"``, ``"equivalent"``, ``"undecided"``."""

    a: str
    b: str
    seeds: tuple
    diffs: tuple
    mean: float
    low: float | None
    high: float | None
    min_effect: float
    verdict: str
    reason: str = ""  # why an undecided comparison is undecided, or what "equivalent" means here

    @property
    def decided(self) -> bool:
        return self.verdict != "undecided"

    def __str__(self) -> str:
        def pts(x):  # in points, without a "-0.00" from rounding noise
            return f"{round(100 * x, 2) + 0.0:+.2f}"

        interval = (f"95% interval {pts(self.low)} to {pts(self.high)}" if self.low is not None
                    else "no interval from 1 seed")
        why = self.reason
        return (f"{self.a} - {self.b}: {pts(self.mean)} points (per seed {', '.join(map(pts, self.diffs))}; "
                f"{interval}) -> {self.verdict}"
                + (f" ({why})" if why else ""))


def paired(a: Mapping, b: Mapping, names: tuple[str, str] = ("a", "b"), *, n_test: int | None = None,
           min_effect: float | None = None) -> Paired:
    """Compare two methods by the course's rule (the module docstring). ``a`` and ``b`` map seed -> value (e.g.
    test accuracy as a share); only seeds in both count. The minimum effect is ``min_effect`` if given, else one
    test message (``1 / n_test``), else 0."""
    seeds = tuple(s for s in a if s in b)
    if not seeds:
        raise ValueError(f"{names[0]} and {names[1]} share no seed ({sorted(a)} vs {sorted(b)}): a paired comparison "
                         "needs both methods run on the same seeds")
    if min_effect is None:
        min_effect = 1 / n_test if n_test else 0.0
    if min_effect < 0:
        raise ValueError(f"min_effect must be 0 or more, got {min_effect}")
    diffs = tuple(float(a[s]) - float(b[s]) for s in seeds)
    if not all(math.isfinite(d) for d in diffs):
        raise ValueError(f"the values of {names[0]} or {names[1]} are not all finite: {diffs}")
    n = len(diffs)
    mean = sum(diffs) / n
    low = high = None
    verdict = "undecided"
    if n >= 2:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        half = _t(n - 1) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
        eps = 1e-12  # accuracies are fractions of a test set: 1/300 - 0 must count as one whole message
        if (low > 0 or high < 0) and abs(mean) >= min_effect - eps:
            verdict = f"{names[0] if mean > 0 else names[1]} better"
        elif -min_effect - eps <= low and high <= min_effect + eps and min_effect > 0:
            verdict = "equivalent"
    reason = {"undecided": (f"a difference below the minimum effect of {100 * min_effect:.2f} points"
                            if low is not None and (low > 0 or high < 0) else f"{n} seeds cannot decide"),
              "equivalent": f"no difference of {100 * min_effect:.2f} points or more"}.get(verdict, "")
    return Paired(names[0], names[1], seeds, diffs, mean, low, high, min_effect, verdict, reason)
