"""DPO pair mining over rewarded candidates, vectorised: every (chosen, rejected) of one state whose reward gap
exceeds T_diff, optionally only where no continuation ranks the rejected candidate above the chosen one.

The work is grouped by state size: all states with g candidates form one (m, g) index matrix, and the (m, g, g)
matrix of reward gaps is compared with T_diff at once, so the only Python loop runs over the few distinct state
sizes. Pairs never cross states (they come from within one row of that matrix) and never pair a candidate with
itself (the diagonal is excluded, whatever T_diff is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Reward gaps within this of T_diff count as ties (excluded): rewards are sums of gamma powers, so a gap that is
#: exactly T_diff on paper can land a rounding error above it in floating point.
TIE_EPS = 1e-9


@dataclass(frozen=True)
class Pairs:
    """Mined pairs as row indices into the candidates, with their reward gap (chosen minus rejected)."""

    chosen: np.ndarray  # (m,) int64
    rejected: np.ndarray  # (m,) int64
    delta: np.ndarray  # (m,) float64

    def __len__(self) -> int:
        return int(self.chosen.shape[0])

    def take(self, keep: np.ndarray) -> Pairs:
        return Pairs(self.chosen[keep], self.rejected[keep], self.delta[keep])


def state_groups(state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by state (stable: input order inside a state), each state's first position and its size."""
    order = np.argsort(state, kind="stable")
    s = state[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if s.size else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.r_[starts, s.size])
    return order, starts, sizes


def mine(state: np.ndarray, reward: np.ndarray, t_diff: float, per_continuation: np.ndarray | None = None,
         cont_mask: np.ndarray | None = None) -> Pairs:
    """Every (chosen, rejected) of one state with reward(chosen) - reward(rejected) > t_diff (+ TIE_EPS).

    With `per_continuation` (n, C) and `cont_mask` (n, C), a pair is also dropped when, in some continuation both
    candidates have, the rejected one scored higher (continuation c of every candidate of a state shares the seeker
    seed: the comparison is paired). Output order: by state (first appearance), then chosen, then rejected row."""
    state = np.asarray(state)
    reward = np.asarray(reward, dtype=np.float64)
    order, starts, sizes = state_groups(state)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for g in np.unique(sizes):
        if g < 2:
            continue
        idx = order[starts[sizes == g][:, None] + np.arange(g)[None, :]]  # (m, g)
        r = reward[idx]
        gap = r[:, :, None] - r[:, None, :]  # gap[s, a, b] = reward(a) - reward(b)
        ok = gap > t_diff + TIE_EPS
        ok[:, np.arange(g), np.arange(g)] = False
        s, a, b = np.nonzero(ok)  # row-major: by state, then chosen, then rejected position
        parts.append((idx[s, a], idx[s, b], gap[s, a, b]))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty.copy(), np.zeros(0))
    chosen, rejected, delta = (np.concatenate(x) for x in zip(*parts, strict=True))
    if per_continuation is not None:  # only on the pairs that passed the gap test: far fewer than all (a, b)
        if cont_mask is None:
            raise ValueError("per_continuation needs cont_mask")
        both = cont_mask[chosen] & cont_mask[rejected]
        reversed_ = (per_continuation[chosen] - per_continuation[rejected]) < -TIE_EPS
        keep = ~(reversed_ & both).any(axis=1)
        chosen, rejected, delta = chosen[keep], rejected[keep], delta[keep]
    if len(parts) > 1:  # one state size is already in (state, chosen, rejected) order
        o = np.lexsort((rejected, chosen, state[chosen]))
        chosen, rejected, delta = chosen[o], rejected[o], delta[o]
    return Pairs(chosen, rejected, delta)


def cap_per_state(pairs: Pairs, state: np.ndarray, k: int) -> Pairs:
    """Keep each state's k pairs with the largest gaps (ties: the earlier pair); k = 0 keeps all."""
    if k <= 0 or len(pairs) == 0:
        return pairs
    st = state[pairs.chosen]
    o = np.lexsort((np.arange(len(pairs)), -pairs.delta, st))
    s_sorted = st[o]
    first = np.r_[0, np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1]
    rank = np.arange(len(o)) - np.repeat(first, np.diff(np.r_[first, len(o)]))
    keep = np.sort(o[rank < k])
    return pairs.take(keep)


def first_of_duplicates(state: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Mask of rows that are the first of their (state, key) pair, e.g. key = a hash of the candidate's response,
    so two identical candidates of one state never form a pair (chosen would equal rejected)."""
    combo = np.stack([np.asarray(state, dtype=np.int64), np.asarray(key, dtype=np.int64)], axis=1)
    _, first = np.unique(combo, axis=0, return_index=True)
    mask = np.zeros(len(state), dtype=bool)
    mask[first] = True
    return mask


# ------------------------------------------------------------------------------------------ the contract command
def pairs_file(in_path: str | Path, out_path: str | Path, t_diff: float, consistent: bool = False,
               gamma: float = 1.0, horizon: int = 1) -> dict[str, float]:
    """`esvr supporter pairs`: one row `{state_id, chosen, rejected, delta}` per pair of one state whose reward gap
    exceeds t_diff (input: rows with `state_id`, `candidate_id`, `reward`; with `consistent`, also their `n`)."""
    import orjson
    import pyarrow as pa
    import pyarrow.json as pj

    from tasks.common.io import atomic_open
    from tasks.supporter.reward import RewardInputError, candidates_of, continuation_returns, ragged

    path = Path(in_path)
    if not path.is_file():
        raise RewardInputError(f"{path}: no such file")
    schema = pa.schema([("state_id", pa.string()), ("candidate_id", pa.string()), ("reward", pa.float64()),
                        ("n", pa.list_(pa.list_(pa.float64())))])
    ropts = pj.ReadOptions(block_size=max(1 << 20, path.stat().st_size + 1), use_threads=False)
    try:
        table = pj.read_json(path, read_options=ropts,
                             parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
    except pa.ArrowInvalid as e:
        raise RewardInputError(f"{path}: not readable as rewarded candidates (state_id, candidate_id: strings; "
                               f"reward: a number): {e}") from None
    need = ("state_id", "candidate_id", "reward") + (("n",) if consistent else ())
    hint = " (run `esvr supporter reward` first)"
    state, state_ids, cand = candidates_of(table, path, need, {"reward": hint, "n": hint})
    reward = table.column("reward").to_numpy()
    per_cont = cont_mask = None
    if consistent:
        rg = ragged(table.column("n"))
        per_turn = rg.dense(rg.values.to_numpy(zero_copy_only=False), fill=0.0)
        per_cont, cont_mask = continuation_returns(per_turn, rg.turn_mask, gamma, horizon), rg.cont_mask
    pairs = mine(state, reward, t_diff, per_cont, cont_mask)
    with atomic_open(out_path, "wb") as f:
        for a, b, d in zip(pairs.chosen.tolist(), pairs.rejected.tolist(), pairs.delta.tolist(), strict=True):
            f.write(orjson.dumps({"state_id": state_ids[state[a]], "chosen": cand[a], "rejected": cand[b],
                                  "delta": round(d, 12)}) + b"\n")
    return {"rows": float(table.num_rows), "states": float(len(state_ids)), "pairs": float(len(pairs))}
