"""Statistics of the evaluation, declared once: bootstrap CIs of means, paired differences, weighted kappa.

Every interval is a percentile bootstrap over *dialogues* (the unit that is sampled: one persona, one seeker seed).
Differences against the baseline are paired: variant and baseline dialogues of the same persona form one pair, and
pairs are resampled together, so the persona's own difficulty cancels out of the difference (the point of running
every variant on the same personas with the same seeker seeds). Missing values (NaN: a judge call that failed, a
dialogue without a reported intensity) drop out of the mean they would enter, and `n` says how many entered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean (or mean difference) with its bootstrap interval and the number of dialogues (or pairs) behind it."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _finite(x: Sequence[float | None]) -> np.ndarray:
    a = np.asarray([np.nan if v is None else float(v) for v in x], dtype=np.float64)
    return a[np.isfinite(a)]


def bootstrap_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """`n_boot` means of resamples (with replacement) of `x`, vectorised: one (n_boot, n) index draw."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    return np.asarray(x[idx].mean(axis=1))


def mean_ci(x: Sequence[float | None], n_boot: int, alpha: float, seed: int) -> Estimate:
    """Mean of the finite values with a (1 - alpha) percentile-bootstrap interval; NaNs when nothing is left."""
    a = _finite(x)
    if len(a) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    if len(a) == 1:  # one dialogue: no spread to resample, the interval is the point
        return Estimate(float(a[0]), float(a[0]), float(a[0]), 1)
    means = bootstrap_means(a, n_boot, seed)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(a.mean()), float(lo), float(hi), len(a))


def paired_diff_ci(variant: dict[str, float | None], baseline: dict[str, float | None], n_boot: int, alpha: float,
                   seed: int) -> Estimate:
    """Mean of variant - baseline over the keys (personas) both have a finite value for, with a paired bootstrap
    interval (pairs resampled together)."""
    keys = sorted(k for k in variant.keys() & baseline.keys()
                  if variant[k] is not None and baseline[k] is not None
                  and math.isfinite(float(variant[k])) and math.isfinite(float(baseline[k])))  # type: ignore[arg-type]
    d = [float(variant[k]) - float(baseline[k]) for k in keys]  # type: ignore[arg-type]
    return mean_ci(d, n_boot, alpha, seed)


def weighted_kappa(a: Sequence[int], b: Sequence[int], categories: Sequence[int] = (1, 2, 3, 4, 5),
                   weights: str = "quadratic") -> float:
    """Cohen's weighted kappa of two raters' ordinal scores (quadratic or linear disagreement weights):
    1 - sum(w * observed) / sum(w * expected), expected from the two raters' marginals. NaN when undefined
    (fewer than two pairs, or both raters constant on the same category)."""
    if len(a) != len(b):
        raise ValueError(f"weighted_kappa: {len(a)} scores against {len(b)}")
    if len(a) < 2:
        return math.nan
    k = len(categories)
    pos = {c: i for i, c in enumerate(categories)}
    obs = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        obs[pos[int(x)], pos[int(y)]] += 1
    obs /= obs.sum()
    exp = np.outer(obs.sum(1), obs.sum(0))
    i, j = np.indices((k, k))
    w = (i - j) ** 2 if weights == "quadratic" else np.abs(i - j)
    denom = float((w * exp).sum())
    if denom == 0:
        return math.nan
    return float(1 - (w * obs).sum() / denom)
