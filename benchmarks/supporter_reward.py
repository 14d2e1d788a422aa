"""Benchmark: the value reward + DPO pair mining (with the consistency filter) over 1 M synthetic scored candidates,
vectorised (tasks/supporter/reward.py, pairs.py) against a naive Python loop over the same candidates as nested
Python lists, in one process (median of 3 runs each). Targets: < 10 s for the vectorised path on 2 cores, >= 20x the loop.

Synthetic data: 4 candidates per state, 2 continuations of 1-3 seeker turns, 3 target values each with uniform
probabilities. The loop runs on a subsample (default 50 k candidates, whole states) and its time is scaled to 1 M
(it is linear in the candidates); both paths' results are compared on that subsample first.

    python -m benchmarks.supporter_reward [--candidates 1000000] [--naive 50000]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from tasks.supporter import pairs as P
from tasks.supporter import reward as R
from tasks.supporter.pairs import TIE_EPS

K, C, H, T = 4, 2, 3, 3
GAMMA, HORIZON, THRESHOLD, T_DIFF = 0.5, 3, 0.5, 0.5


def synthetic(n: int, seed: int = 0) -> R.Scored:
    """n scored candidates (n/K states) in the columnar layout."""
    rng = np.random.default_rng(seed)
    n = n - n % K
    lengths = rng.integers(1, H + 1, size=(n, C))
    turn_mask = np.arange(H)[None, None, :] < lengths[:, :, None]
    probs = rng.random((n, C, H, T), dtype=np.float32)
    probs[~turn_mask] = np.nan
    targets = np.stack([rng.choice(20, size=T, replace=False) for _ in range(64)])[rng.integers(0, 64, n)]
    return R.Scored(state=np.repeat(np.arange(n // K), K), state_ids=[str(i) for i in range(n // K)],
                    candidate_ids=[str(i) for i in range(n)], targets=targets.astype(np.int16),
                    cont_mask=np.ones((n, C), dtype=bool), turn_mask=turn_mask, probs=probs)


def vectorised(s: R.Scored) -> P.Pairs:
    rew = R.value_reward(s, np.full(20, THRESHOLD), GAMMA, HORIZON)
    return P.mine(s.state, rew.reward, T_DIFF, rew.per_continuation, s.cont_mask)


def as_python(s: R.Scored) -> list[dict[str, Any]]:
    """The candidates as a naive implementation would hold them: one dict per row, nested lists per turn."""
    rows = []
    probs, mask = s.probs.tolist(), s.turn_mask.tolist()
    for i in range(s.n):
        conts = [[probs[i][c][k] for k in range(H) if mask[i][c][k]] for c in range(C)]
        rows.append({"state": int(s.state[i]), "continuations": conts})
    return rows


def naive(rows: list[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """The straightforward loop: per candidate, per continuation, per turn, per target; then all pairs of a state."""
    rewards, per_cont = [], []
    for r in rows:
        totals = []
        for cont in r["continuations"]:
            total = 0.0
            for k, turn in enumerate(cont[:HORIZON]):
                total += GAMMA ** k * sum(1 for p in turn if p >= THRESHOLD)
            totals.append(total)
        per_cont.append(totals)
        rewards.append(sum(totals) / len(totals))
    by_state: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_state.setdefault(r["state"], []).append(i)
    out = []
    for members in by_state.values():
        for a in members:
            for b in members:
                d = rewards[a] - rewards[b]
                if a != b and d > T_DIFF + TIE_EPS and all(x - y >= -TIE_EPS for x, y in zip(per_cont[a], per_cont[b],
                                                                                             strict=True)):
                    out.append((a, b, d))
    return out


def _median(fn: Any, repeats: int) -> tuple[float, Any]:
    """Median wall time of `repeats` calls (the machine is shared: one run can be slowed by a neighbour)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--candidates", type=int, default=1_000_000)
    ap.add_argument("--naive", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3, help="each path runs this often; the median counts")
    a, _ = ap.parse_known_args()
    s = synthetic(a.candidates)
    sub = s.take(np.arange(a.naive - a.naive % K))
    rows = as_python(sub)
    want = naive(rows)
    got = vectorised(sub)
    assert [(int(x), int(y)) for x, y in zip(got.chosen, got.rejected, strict=True)] == [(x, y) for x, y, _ in want]
    assert np.allclose(got.delta, [d for *_, d in want])
    fast, pairs = _median(lambda: vectorised(s), a.repeats)
    slow_sub, _ = _median(lambda: naive(rows), a.repeats)
    slow = slow_sub * s.n / sub.n
    out = {"candidates": s.n, "states": s.n // K, "pairs": len(pairs), "vectorised_s": round(fast, 3),
           "naive_subsample": sub.n, "naive_subsample_s": round(slow_sub, 3), "naive_scaled_s": round(slow, 2),
           "repeats": a.repeats, "speedup": round(slow / fast, 1), "target_s": 10.0, "target_speedup": 20.0,
           "meets_target": fast < 10.0 and slow / fast >= 20.0}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
