"""The supporter's rewards on scored rollouts, vectorised over every candidate at once (numpy + pyarrow).

Value reward (ES-VR, docs/supporter.md):

    R(u_t) = mean over continuations c of  sum_{k=1..min(h, len_c)} gamma^(k-1) * N_{t+k}^c

N_{t+k}^c = how many of the candidate turn's target values are *present* in the seeker's k-th later turn of
continuation c, by the presence rule of tasks/annotators/presence.py (per-category probability cuts; a turn with
fewer than `min_chars` non-space characters, or whose top probability over all 20 categories stays below the gate
`min_top`, expresses nothing). A turn beyond the end of a continuation counts 0.

Emotion reward (the Emotion-DPO baseline, on the *same* rollouts): the same discounted, continuation-averaged sum
with a per-turn emotion signal E in place of N: the emotion model's positivity of the seeker's turn (`positivity`,
the profiles' choice), or the drop of the seeker's reported intensity since its previous turn (`intensity_drop`).

Layout (`Scored`): one row per candidate; continuations padded to C, seeker turns padded to H, target values
padded to T. Everything below is array arithmetic; the only Python loops run over columns (20 categories), never
over candidates or turns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tasks.domain.taxonomy import VALUE_CATEGORIES, VALUE_INDEX

EmotionSignal = Literal["positivity", "intensity_drop"]


class RewardInputError(ValueError):
    """A scored-candidates file that does not follow the contract; the message names file, line and key."""


@dataclass(frozen=True)
class Scored:
    """Columnar scored candidates (see the module docstring). NaN marks a probability/signal that does not exist."""

    state: np.ndarray  # (n,) int64 state codes, numbered in order of first appearance
    state_ids: list[str]  # code -> state id
    candidate_ids: list[str]  # (n,)
    targets: np.ndarray  # (n, T) int16 category indices, -1 = padding
    cont_mask: np.ndarray  # (n, C) bool: continuation c exists
    turn_mask: np.ndarray  # (n, C, H) bool: seeker turn k of continuation c exists
    probs: np.ndarray  # (n, C, H, T) float32: detector probability of target j in that turn (NaN: unknown)
    chars: np.ndarray | None = None  # (n, C, H) int32 non-space characters of the turn's utterance (-1: unknown)
    positivity: np.ndarray | None = None  # (n, C, H) float64 emotion-model positivity of the turn
    intensity: np.ndarray | None = None  # (n, C, H) float64 seeker's reported intensity (1-5) after that turn
    intensity_before: np.ndarray | None = None  # (n,) float64 seeker's intensity before the candidate turn
    source: str = ""  # the file the rows came from (error messages name its lines)
    rows: np.ndarray | None = None  # (n,) row numbers in `source` (None: 0..n-1)
    top: np.ndarray | None = None  # (n, C, H) float32 highest of the turn's 20 probabilities (the rule's gate; NaN)

    @property
    def n(self) -> int:
        return int(self.state.shape[0])

    def take(self, rows: np.ndarray) -> Scored:
        """The candidates `rows` (indices or a mask), keeping the state numbering."""
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows

        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Scored(self.state[idx], self.state_ids, [self.candidate_ids[i] for i in idx], self.targets[idx],
                      self.cont_mask[idx], self.turn_mask[idx], self.probs[idx], sub(self.chars),
                      sub(self.positivity), sub(self.intensity), sub(self.intensity_before), self.source,
                      idx if self.rows is None else self.rows[idx], sub(self.top))


# ------------------------------------------------------------------------------------------ the arithmetic
def discount_weights(gamma: float, horizon: int, width: int) -> np.ndarray:
    """(width,) weights gamma^(k-1) for k <= horizon, 0 beyond it."""
    w = gamma ** np.arange(width, dtype=np.float64)
    w[horizon:] = 0.0
    return w


def value_counts(s: Scored, thresholds: Sequence[float] | np.ndarray, min_chars: int = 0,
                 min_top: float = 0.0) -> np.ndarray:
    """N per continuation turn, (n, C, H) int16: target values whose probability reaches their category's cut.

    A turn whose utterance has fewer than `min_chars` non-space characters counts 0 (the presence rule's text
    test), and so does one whose top probability over all 20 categories stays below `min_top` (its gate); turns
    without a known utterance (`chars` -1 or absent) are judged by their probabilities alone."""
    th = np.asarray(thresholds, dtype=np.float32)
    if th.shape != (len(VALUE_CATEGORIES),):
        raise ValueError(f"need {len(VALUE_CATEGORIES)} per-category thresholds, got shape {th.shape}")
    cuts = np.where(s.targets >= 0, th[np.clip(s.targets, 0, None)], np.nan).astype(np.float32)  # (n, T)
    # NaN on either side compares False: padded targets, unknown probabilities and missing turns count 0
    present = s.probs >= cuts[:, None, None, :]
    counts = present[..., 0].astype(np.int16)
    for j in range(1, present.shape[-1]):  # over the T target slots: numpy's sum over a short last axis is 5x slower
        counts += present[..., j]
    if s.chars is not None and min_chars > 0:
        counts[(s.chars >= 0) & (s.chars < min_chars)] = 0
    if min_top > 0:
        if s.top is None:
            raise ValueError("the presence rule has a gate (min_top) but the turns carry no value_probs to apply it")
        counts[~(s.top >= min_top)] = 0  # NaN (unknown) compares False: such turns already count 0
    return counts


def emotion_signal(s: Scored, signal: EmotionSignal) -> np.ndarray:
    """E per continuation turn, (n, C, H) float64 (0 where the turn does not exist)."""
    if signal == "positivity":
        if s.positivity is None:
            raise RewardInputError("emotion reward 'positivity' needs a 'positivity' in every continuation turn")
        e = s.positivity
    elif signal == "intensity_drop":
        if s.intensity is None or s.intensity_before is None:
            raise RewardInputError("emotion reward 'intensity_drop' needs 'emotion_intensity' in every continuation "
                                   "turn and the row's 'seeker_intensity_before'")
        prev = np.concatenate([np.broadcast_to(s.intensity_before[:, None, None], s.intensity[:, :, :1].shape),
                               s.intensity[:, :, :-1]], axis=2)
        e = prev - s.intensity  # a fall in intensity is a gain
    else:
        raise ValueError(f"unknown emotion signal {signal!r}; expected positivity | intensity_drop")
    missing = s.turn_mask & np.isnan(e)
    if missing.any():
        row = int(np.argwhere(missing)[0][0])
        raise RewardInputError(f"{_where(s, row)}: a continuation turn lacks the '{signal}' input of the "
                               "emotion reward")
    return np.where(s.turn_mask, e, 0.0)


def continuation_returns(per_turn: np.ndarray, turn_mask: np.ndarray, gamma: float, horizon: int) -> np.ndarray:
    """(n, C): sum_{k <= min(h, len)} gamma^(k-1) x_k per continuation (turns beyond the end count 0)."""
    w = discount_weights(gamma, horizon, per_turn.shape[-1])
    out = np.zeros(per_turn.shape[:-1], dtype=np.float64)
    for k in range(min(horizon, per_turn.shape[-1])):  # over the h turn positions, each a whole (n, C) column
        out += w[k] * np.where(turn_mask[..., k], per_turn[..., k], 0)
    return out


def mean_over_continuations(returns: np.ndarray, cont_mask: np.ndarray) -> np.ndarray:
    """(n,): the mean of a candidate's continuation returns (rows without continuations are rejected at load)."""
    k = cont_mask.sum(axis=1)
    return np.where(cont_mask, returns, 0.0).sum(axis=1) / np.maximum(k, 1)


@dataclass(frozen=True)
class Rewards:
    """A reward over scored candidates: per turn (n, C, H), per continuation (n, C) and the candidate's (n,)."""

    per_turn: np.ndarray
    per_continuation: np.ndarray
    reward: np.ndarray


def value_reward(s: Scored, thresholds: Sequence[float] | np.ndarray, gamma: float, horizon: int,
                 min_chars: int = 0, min_top: float = 0.0) -> Rewards:
    n = value_counts(s, thresholds, min_chars, min_top)
    per_cont = continuation_returns(n, s.turn_mask, gamma, horizon)
    return Rewards(n, per_cont, mean_over_continuations(per_cont, s.cont_mask))


def emotion_reward(s: Scored, signal: EmotionSignal, gamma: float, horizon: int) -> Rewards:
    e = emotion_signal(s, signal)
    per_cont = continuation_returns(e, s.turn_mask, gamma, horizon)
    return Rewards(e, per_cont, mean_over_continuations(per_cont, s.cont_mask))


# ------------------------------------------------------------------------------------------ reading the contract
def line_of(source: str | Path, row: int) -> int:
    """1-based line of the row-th JSON row of `source` (pyarrow skips blank lines, so rows and lines can differ).
    Only error messages call this: it reads the file."""
    seen = -1
    with open(source, "rb") as f:
        for i, raw in enumerate(f, 1):
            if raw.strip():
                seen += 1
                if seen == row:
                    return i
    return row + 1


def _where(s: Scored, row: int) -> str:
    r = int(row if s.rows is None else s.rows[row])
    return f"{s.source}:{line_of(s.source, r)}" if s.source else f"row {r + 1}"


def _schema():  # noqa: ANN202 - pyarrow types
    import pyarrow as pa

    vp = pa.struct([(c, pa.float64()) for c in VALUE_CATEGORIES])
    turn = pa.struct([("value_probs", vp), ("positivity", pa.float64()), ("emotion_intensity", pa.float64()),
                      ("utterance", pa.string())])
    return pa.schema([("state_id", pa.string()), ("candidate_id", pa.string()),
                      ("target_values", pa.list_(pa.string())), ("seeker_intensity_before", pa.float64()),
                      ("continuations", pa.list_(pa.list_(turn)))])


def _diagnose(path: Path, err: Exception) -> RewardInputError:
    """Slow path, only after pyarrow refused the file: find the first offending line and say what is wrong."""
    import orjson

    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                return RewardInputError(f"{path}:{i}: malformed JSON: {e}")
            problem = _row_problem(row)
            if problem:
                return RewardInputError(f"{path}:{i}: {problem}")
    return RewardInputError(f"{path}: not readable as scored candidates: {err}")


def _row_problem(row: object) -> str | None:
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    for key in ("state_id", "candidate_id"):
        if not isinstance(row.get(key), str):
            return f"key '{key}' must be a string, got {type(row.get(key)).__name__}"
    tv = row.get("target_values")
    if not isinstance(tv, list) or not all(isinstance(x, str) for x in tv):
        return "key 'target_values' must be a list of category names"
    conts = row.get("continuations")
    if not isinstance(conts, list) or not all(isinstance(c, list) for c in conts):
        return "key 'continuations' must be a list of continuations (lists of seeker turns)"
    for ci, c in enumerate(conts):
        for k, turn in enumerate(c):
            if not isinstance(turn, dict):
                return f"continuations[{ci}][{k}] must be an object"
            vp = turn.get("value_probs", {})
            if vp is not None and (not isinstance(vp, dict) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in vp.values())):
                return f"continuations[{ci}][{k}].value_probs must map category names to numbers"
            for key in ("positivity", "emotion_intensity"):
                v = turn.get(key)
                if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
                    return f"continuations[{ci}][{k}].{key} must be a number"
    return None


def _positions(lists) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001 - a pyarrow ListArray
    """For a list array: each value's parent row, its position inside the parent list, and the lists' lengths."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(parent.shape[0], dtype=np.int64) - starts[parent]
    return parent, pos, lengths


def _column(turns, name: str, n_turns: int) -> np.ndarray | None:  # noqa: ANN001 - a pyarrow StructArray
    import pyarrow.compute as pc

    if turns.type.get_field_index(name) < 0:
        return None
    col = pc.struct_field(turns, name)
    if col.null_count == len(col):
        return None
    return col.to_numpy(zero_copy_only=False).astype(np.float64) if n_turns else np.zeros(0)


@dataclass(frozen=True)
class Ragged:
    """Where the values of a list<list<...>> column sit in the padded (n, C, H) layout."""

    row: np.ndarray  # (m,) row of each innermost value
    c: np.ndarray  # (m,) its continuation (outer list position)
    k: np.ndarray  # (m,) its position inside the continuation
    n_cont: np.ndarray  # (n,) outer list lengths
    cont_mask: np.ndarray  # (n, C)
    turn_mask: np.ndarray  # (n, C, H)
    values: Any  # the flattened innermost pyarrow array

    def dense(self, values: np.ndarray, fill: float = np.nan, dtype: Any = np.float64) -> np.ndarray:
        out = np.full(self.turn_mask.shape + values.shape[1:], fill, dtype=dtype)
        out[self.row, self.c, self.k] = values
        return out


def ragged(column: Any) -> Ragged:
    """Positions of a list<list<...>> pyarrow column, all vectorised (list offsets, no loop per turn)."""
    import pyarrow.compute as pc

    outer = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    c_parent, c_pos, n_cont = _positions(outer)
    inner = pc.list_flatten(outer)
    k_parent, k_pos, turn_len = _positions(inner)
    n = len(outer)
    width_c = max(1, int(n_cont.max()) if n else 1)
    width_h = max(1, int(turn_len.max()) if len(turn_len) else 1)
    cont_mask = np.zeros((n, width_c), dtype=bool)
    cont_mask[c_parent, c_pos] = True
    turn_mask = np.zeros((n, width_c, width_h), dtype=bool)
    row, c = c_parent[k_parent], c_pos[k_parent]
    turn_mask[row, c, k_pos] = True
    return Ragged(row, c, k_pos, n_cont, cont_mask, turn_mask, pc.list_flatten(inner))


def candidates_of(table: Any, path: Path, required: Sequence[str],
                  hints: dict[str, str] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """(state codes by first appearance, state ids, candidate ids) of a table whose rows are candidates; a missing
    required key or a repeated (state_id, candidate_id) is an error naming the line."""
    for key in required:
        col = table.column(key)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise RewardInputError(f"{path}:{line_of(path, row)}: key '{key}' is missing{(hints or {}).get(key, '')}")
    enc = table.column("state_id").combine_chunks().dictionary_encode()
    state = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    state_ids = enc.dictionary.to_pylist()
    cand = table.column("candidate_id").to_pylist()
    dup = first_repeat(table)
    if dup is not None:
        raise RewardInputError(f"{path}:{line_of(path, dup[0])}: candidate '{cand[dup[0]]}' of state "
                               f"'{state_ids[state[dup[0]]]}' appears again (first at line {line_of(path, dup[1])}); "
                               "every (state_id, candidate_id) must be unique")
    return state, state_ids, cand


def first_repeat(table: Any) -> tuple[int, int] | None:
    """(row, row of its first occurrence) of the first repeated (state_id, candidate_id), or None."""
    import pyarrow.compute as pc

    keys = pc.binary_join_element_wise(table.column("state_id"), table.column("candidate_id"), "\x00")
    uniq = keys.combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
    if not len(uniq):
        return None
    first = np.full(int(uniq.max()) + 1, len(uniq), dtype=np.int64)
    np.minimum.at(first, uniq, np.arange(len(uniq)))
    dups = np.flatnonzero(first[uniq] != np.arange(len(uniq)))
    return (int(dups[0]), int(first[uniq[dups[0]]])) if dups.size else None


def read_table(path: str | Path) -> Any:
    """The JSONL file as a pyarrow Table under the contract's schema (other keys are kept, their types inferred)."""
    import pyarrow as pa
    import pyarrow.json as pj

    path = Path(path)
    if not path.is_file():
        raise RewardInputError(f"{path}: no such file")
    size = os.path.getsize(path)
    # one block: a category key first seen late in the file must still be inferred (and then reported as unknown)
    ropts = pj.ReadOptions(block_size=max(1 << 20, size + 1), use_threads=False)
    popts = pj.ParseOptions(explicit_schema=_schema(), unexpected_field_behavior="infer")
    try:
        table = pj.read_json(path, read_options=ropts, parse_options=popts) if size else None
    except pa.ArrowInvalid as e:
        raise _diagnose(path, e) from None
    if table is None or table.num_rows == 0:
        raise RewardInputError(f"{path}: no scored candidates")
    return table


def read_scored(path: str | Path) -> Scored:
    """Scored candidates from the JSONL contract of `esvr supporter reward` (docs/CONTRACTS.md)."""
    return scored_from_table(read_table(path), path)


def scored_from_table(table: Any, path: str | Path) -> Scored:
    """The padded arrays of `Scored` from a table of `read_table`. Unknown categories, duplicate (state_id,
    candidate_id) rows and rows without continuations are errors naming the line; missing probabilities count
    as absent values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path)
    n = table.num_rows

    def where(row: int) -> str:
        return f"{path}:{line_of(path, row)}"

    state, state_ids, cand = candidates_of(table, path, ("state_id", "candidate_id", "target_values",
                                                         "continuations"))

    # target values -> category indices
    tv = table.column("target_values").combine_chunks()
    t_parent, t_pos, t_len = _positions(tv)
    flat_tv = pc.list_flatten(tv)
    idx = pc.index_in(flat_tv, value_set=pa.array(VALUE_CATEGORIES)).to_numpy(zero_copy_only=False)
    if len(flat_tv) and np.isnan(idx.astype(np.float64)).any():
        bad = int(np.flatnonzero(np.isnan(idx.astype(np.float64)))[0])
        raise RewardInputError(f"{where(int(t_parent[bad]))}: target value {flat_tv[bad].as_py()!r} is not a "
                               "category of tasks.domain.taxonomy.VALUE_CATEGORIES")
    width_t = max(1, int(t_len.max()) if n else 1)
    targets = np.full((n, width_t), -1, dtype=np.int16)
    targets[t_parent, t_pos] = idx.astype(np.int16) if len(flat_tv) else 0

    # continuations -> (row, c) and their turns -> (row, c, k)
    rg = ragged(table.column("continuations"))
    if (rg.n_cont == 0).any():
        row = int(np.flatnonzero(rg.n_cont == 0)[0])
        raise RewardInputError(f"{where(row)}: key 'continuations' is empty; a reward needs at least one "
                               "continuation (an empty continuation [] is allowed and counts 0)")
    turns = rg.values
    n_turns = len(turns)

    # value probabilities of each turn -> the row's target values only
    p = np.full((n_turns, len(VALUE_CATEGORIES)), np.nan, dtype=np.float32)
    if turns.type.get_field_index("value_probs") >= 0 and n_turns:
        vp = pc.struct_field(turns, "value_probs")
        unknown = [f.name for f in vp.type if f.name not in VALUE_INDEX]
        if unknown:
            col = pc.struct_field(vp, unknown[0]).is_valid().to_numpy(zero_copy_only=False)
            row = int(rg.row[np.flatnonzero(col)[0]])
            raise RewardInputError(f"{where(row)}: value_probs key {unknown[0]!r} is not a category of "
                                   "tasks.domain.taxonomy.VALUE_CATEGORIES")
        for j, c in enumerate(VALUE_CATEGORIES):
            p[:, j] = pc.struct_field(vp, c).fill_null(np.nan).to_numpy(zero_copy_only=False)
    tg = targets[rg.row] if n_turns else np.zeros((0, width_t), dtype=np.int16)
    tp = np.take_along_axis(p, np.clip(tg, 0, None).astype(np.int64), axis=1)
    tp[tg < 0] = np.nan
    probs = rg.dense(tp, dtype=np.float32)
    top = rg.dense(np.fmax.reduce(p, axis=1), dtype=np.float32)  # fmax skips NaN: NaN only when all 20 are

    def dense(name: str) -> np.ndarray | None:
        v = _column(turns, name, n_turns)
        return None if v is None else rg.dense(v)

    chars = None
    if n_turns and turns.type.get_field_index("utterance") >= 0:
        utt = pc.struct_field(turns, "utterance")
        if utt.null_count < len(utt):
            stripped = pc.replace_substring_regex(utt, pattern=r"\s", replacement="")
            nch = pc.utf8_length(stripped).fill_null(-1).to_numpy(zero_copy_only=False)
            chars = rg.dense(nch, fill=-1, dtype=np.int32)
    before = table.column("seeker_intensity_before")
    return Scored(
        state=state, state_ids=state_ids, candidate_ids=cand, targets=targets, cont_mask=rg.cont_mask,
        turn_mask=rg.turn_mask, probs=probs, chars=chars, positivity=dense("positivity"),
        intensity=dense("emotion_intensity"),
        intensity_before=None if before.null_count == n else before.to_numpy().astype(np.float64),
        source=str(path), top=top)


# ------------------------------------------------------------------------------------------ the contract command
def rewards_for(s: Scored, kind: Literal["value", "emotion"], gamma: float, horizon: int,
                thresholds: Sequence[float] | np.ndarray | None = None, min_chars: int = 0,
                signal: EmotionSignal = "positivity") -> Rewards:
    """The reward of `kind` over scored candidates (`thresholds`: the presence rule's per-category cuts)."""
    if kind == "value":
        if thresholds is None:
            raise ValueError("the value reward needs presence thresholds")
        return value_reward(s, thresholds, gamma, horizon, min_chars)
    return emotion_reward(s, signal, gamma, horizon)


def reward_file(in_path: str | Path, out_path: str | Path, gamma: float, horizon: int, threshold: float,
                kind: Literal["value", "emotion"] = "value", signal: EmotionSignal = "positivity") -> dict[str, float]:
    """`esvr supporter reward`: every input row plus `n` (N per turn of each continuation; `e` for the emotion
    signal) and `reward`, in input order. Returns summary counts."""
    import orjson

    from tasks.common.io import atomic_open, read_jsonl

    table = read_table(in_path)
    s = scored_from_table(table, in_path)
    rew = rewards_for(s, kind, gamma, horizon, np.full(len(VALUE_CATEGORIES), threshold), 0, signal)
    rg = ragged(table.column("continuations"))
    flat = rew.per_turn[rg.row, rg.c, rg.k]  # turn order of the file
    inner_len = np.bincount(np.ravel_multi_index((rg.row, rg.c), rg.cont_mask.shape),
                            minlength=rg.cont_mask.size).reshape(rg.cont_mask.shape)
    per_cont = [inner_len[i, : rg.n_cont[i]] for i in range(s.n)]
    bounds = np.cumsum([x for pc in per_cont for x in pc])[:-1]
    chunks = np.split(flat, bounds) if flat.size else [np.zeros(0)] * int(sum(len(p) for p in per_cont))
    key = "n" if kind == "value" else "e"
    cast = int if kind == "value" else float
    pos = 0
    with atomic_open(out_path, "wb") as f:
        for i, row in enumerate(read_jsonl(in_path)):
            k = len(per_cont[i])
            row[key] = [[cast(x) for x in chunk] for chunk in chunks[pos:pos + k]]
            pos += k
            row["reward"] = round(float(rew.reward[i]), 12)
            f.write(orjson.dumps(row) + b"\n")
    return {"rows": float(s.n), "states": float(len(s.state_ids)), "mean_reward": float(rew.reward.mean())}
