"""Bootstrap intervals and the paired difference on known distributions; weighted kappa against sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.evaluate import stats


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(300):
        x = rng.normal(2.0, 1.0, 40)
        e = stats.mean_ci(list(x), 1000, 0.05, rep)
        hits += e.low <= 2.0 <= e.high
    assert 0.90 <= hits / 300 <= 0.98  # percentile bootstrap at n = 40 under-covers slightly


def test_paired_difference_recovers_a_known_shift_and_beats_the_unpaired_interval():
    rng = np.random.default_rng(1)
    persona = rng.normal(0, 3.0, 100)  # per-persona difficulty shared by both variants
    base = {f"p{i}": float(persona[i] + rng.normal(0, 0.1)) for i in range(100)}
    var = {f"p{i}": float(persona[i] + 0.3 + rng.normal(0, 0.1)) for i in range(100)}
    d = stats.paired_diff_ci(var, base, 2000, 0.05, 7)
    assert d.n == 100 and d.low < 0.3 < d.high and abs(d.mean - 0.3) < 0.03
    a, b = stats.mean_ci(list(var.values()), 2000, 0.05, 1), stats.mean_ci(list(base.values()), 2000, 0.05, 2)
    assert (d.high - d.low) < 0.05 * ((a.high - a.low) + (b.high - b.low))  # pairing removes the persona variance
    assert d.low > 0  # the shift is detected; unpaired intervals overlap
    assert a.low < b.high


def test_paired_difference_uses_only_personas_both_have():
    d = stats.paired_diff_ci({"a": 1.0, "b": 2.0, "c": None}, {"a": 0.0, "c": 1.0, "d": 5.0}, 200, 0.05, 0)
    assert d.n == 1 and d.mean == 1.0 and d.low == d.high == 1.0


def test_missing_values_drop_out_and_empty_is_nan():
    e = stats.mean_ci([1.0, None, float("nan"), 3.0], 500, 0.05, 0)
    assert e.n == 2 and e.mean == 2.0 and 1.0 <= e.low <= e.high <= 3.0
    assert math.isnan(stats.mean_ci([None], 500, 0.05, 0).mean)


def test_bootstrap_is_reproducible_by_seed():
    x = list(np.random.default_rng(3).normal(size=30))
    assert stats.mean_ci(x, 500, 0.05, 11) == stats.mean_ci(x, 500, 0.05, 11)
    assert stats.mean_ci(x, 500, 0.05, 11) != stats.mean_ci(x, 500, 0.05, 12)


@pytest.mark.parametrize("weights", ["quadratic", "linear"])
def test_weighted_kappa_matches_sklearn(weights):
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(4)
    a = rng.integers(1, 6, 80)
    b = np.clip(a + rng.integers(-1, 2, 80), 1, 5)
    ours = stats.weighted_kappa(list(a), list(b), weights=weights)
    assert ours == pytest.approx(cohen_kappa_score(a, b, weights=weights, labels=[1, 2, 3, 4, 5]))
    assert stats.weighted_kappa([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert math.isnan(stats.weighted_kappa([3], [3]))
