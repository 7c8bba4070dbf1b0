"""Paired comparison of two arms over seeds: mean difference, Student-t 95% CI and two-sided p-value.

Each seed trains both arms (same seed: same initial weights, same batch order where the data allow), so
the accuracies come in pairs ``(a_i, b_i)``. The paired t-test (Student 1908) works on the differences
``d_i = b_i - a_i``:

    d̄ = mean(d),  s = std(d, ddof=1),  SE = s / sqrt(n),  t = d̄ / SE  with n - 1 degrees of freedom
    CI = d̄ ± t_{0.975, n-1} · SE,     p = 2 · P(T_{n-1} > |t|)

Pairing removes the seed-to-seed variation both arms share, which an unpaired comparison of two means
would count as noise. With one seed there is no spread to estimate, and CI and p are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy import stats as scipy_stats


@dataclass(frozen=True)
class PairedComparison:
    n: int
    mean_difference: float  # mean of b - a
    std_difference: float  # sample standard deviation (ddof = 1) of b - a
    ci_low: float
    ci_high: float
    t: float
    p_value: float  # two-sided
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for a single value)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedComparison:
    """Paired t-test of ``b`` against ``a`` (see the module docstring)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    differences = [float(y) - float(x) for x, y in zip(a, b)]
    n = len(differences)
    mean, std = mean_std(differences)
    if n < 2:
        return PairedComparison(n, mean, std, float("nan"), float("nan"), float("nan"), float("nan"), confidence)
    standard_error = std / math.sqrt(n)
    critical = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1))
    if standard_error == 0:  # identical differences: no spread; the CI collapses to the point
        t = math.copysign(math.inf, mean) if mean != 0 else float("nan")
        p = 0.0 if mean != 0 else 1.0
        return PairedComparison(n, mean, std, mean, mean, t, p, confidence)
    t = mean / standard_error
    p = float(2 * scipy_stats.t.sf(abs(t), df=n - 1))
    return PairedComparison(n, mean, std, mean - critical * standard_error, mean + critical * standard_error,
                            t, p, confidence)
