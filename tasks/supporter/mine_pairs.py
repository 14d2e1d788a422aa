"""Stage `mine_pairs`: the value reward and the emotion reward of every rolled-out candidate, and the DPO pairs of
each (data/pairs/{value,emotion}/{train,validation}.jsonl), all from the *same* rollouts.

Per state, a pair (chosen, rejected) needs reward(chosen) - reward(rejected) > T_diff and, with
`supporter.pairs.consistent`, no continuation in which the rejected candidate scored higher (the continuations of
a state's candidates share their seeker seeds, so this is a paired comparison). Candidates marked as duplicates
(same response as an earlier candidate of the state) never enter a pair, so chosen != rejected as texts too;
pairs are de-duplicated by (state, chosen text, rejected text) and split train/validation by dialogue.

Pure core: `reward_table`, `mine_kind`, `split_by_dialogue`; shell: `run` (files, metrics, plots).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tasks.annotators.presence import PresenceRule
from tasks.common.config import SupporterPairsParams, SupporterRewardParams
from tasks.common.hashing import content_id
from tasks.common.io import read_jsonl, write_jsonl
from tasks.supporter import pairs as pairs_core
from tasks.supporter import reward as rw

log = logging.getLogger(__name__)

Kind = Literal["value", "emotion"]
KINDS: tuple[Kind, ...] = ("value", "emotion")
DELTA_BINS = 20


class MinePairsError(RuntimeError):
    """Inputs that cannot give pairs; the message says what to change."""


def presence_rule(rcfg: SupporterRewardParams, detector_dir: Path) -> PresenceRule:
    """The rule behind N: the detector's own (presence.json beside it) or one cut for every category."""
    if rcfg.presence == "uniform":
        return PresenceRule.uniform(rcfg.threshold)
    try:
        return PresenceRule.from_folder(detector_dir)
    except FileNotFoundError as e:
        raise MinePairsError(f"supporter.reward.presence is 'detector' but {e}; run `dvc repro train_value_detector` "
                             "or set presence: uniform") from None


def rewards(s: rw.Scored, rcfg: SupporterRewardParams, horizon: int, rule: PresenceRule) -> dict[Kind, rw.Rewards]:
    """Both rewards over the same candidates."""
    return {"value": rw.value_reward(s, rule.thresholds, rcfg.gamma, horizon, rule.min_chars, rule.min_top),
            "emotion": rw.emotion_reward(s, rcfg.emotion_signal, rcfg.gamma, horizon)}


def eligible(table: Any, pcfg: SupporterPairsParams) -> np.ndarray:
    """Candidates that may enter a pair: not a duplicate (and well-formed, when asked)."""
    dup = table.column("duplicate_of").is_null().to_numpy(zero_copy_only=False)
    ok = np.asarray(dup, dtype=bool)
    if pcfg.well_formed_only:
        ok &= np.asarray(table.column("well_formed").fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    return ok


def mine_kind(s: rw.Scored, rew: rw.Rewards, ok: np.ndarray, response_keys: np.ndarray, t_diff: float,
              pcfg: SupporterPairsParams) -> tuple[pairs_core.Pairs, dict[str, float]]:
    """Pairs of one reward over the eligible candidates (indices into all candidates) and filter counts."""
    rows = np.flatnonzero(ok & pairs_core.first_of_duplicates(s.state, response_keys))
    st = s.state[rows]
    plain = pairs_core.mine(st, rew.reward[rows], t_diff)
    if pcfg.consistent:
        found = pairs_core.mine(st, rew.reward[rows], t_diff, rew.per_continuation[rows], s.cont_mask[rows])
    else:
        found = plain
    capped = pairs_core.cap_per_state(found, st, pcfg.max_pairs_per_state)
    mapped = pairs_core.Pairs(rows[capped.chosen], rows[capped.rejected], capped.delta)
    return mapped, {"above_t_diff": float(len(plain)), "dropped_inconsistent": float(len(plain) - len(found)),
                    "dropped_cap": float(len(found) - len(capped)), "pairs": float(len(capped))}


def split_by_dialogue(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split by dialogue (hash order): a dialogue's pairs all land on one side."""
    ids = sorted({r["dialogue_id"] for r in rows}, key=lambda d: content_id([seed, "pairs", d]))
    n_val = round(len(ids) * fraction)
    if fraction > 0 and n_val == 0 and len(ids) >= 2:
        n_val = 1
    val = set(ids[:n_val])
    return [r for r in rows if r["dialogue_id"] not in val], [r for r in rows if r["dialogue_id"] in val]


def distribution(x: np.ndarray, prefix: str) -> dict[str, float]:
    if not x.size:
        return {f"{prefix}.n": 0.0}
    q = np.quantile(x, [0.1, 0.5, 0.9])
    return {f"{prefix}.n": float(x.size), f"{prefix}.mean": float(x.mean()), f"{prefix}.std": float(x.std()),
            f"{prefix}.min": float(x.min()), f"{prefix}.p10": float(q[0]), f"{prefix}.p50": float(q[1]),
            f"{prefix}.p90": float(q[2]), f"{prefix}.max": float(x.max()), f"{prefix}.zero_share": float((x == 0).mean())}


def histogram(x: np.ndarray, bins: int = DELTA_BINS) -> dict[str, list[float]]:
    counts, edges = np.histogram(x, bins=bins) if x.size else (np.zeros(0), np.zeros(0))
    return {"counts": counts.astype(int).tolist(), "edges": [round(float(e), 6) for e in edges]}


# ------------------------------------------------------------------------------------------ shell
def run(rollouts_dir: Path, out_dir: Path, rcfg: SupporterRewardParams, pcfg: SupporterPairsParams, horizon: int,
        detector_dir: Path, seed: int) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """Rewards and pairs of both kinds from data/rollouts; writes out_dir/{value,emotion}/{train,validation}.jsonl
    and out_dir/rewards.jsonl; returns the metrics (with the ΔR histograms) and the raw rewards and gaps (plots)."""
    cand_path = rollouts_dir / "candidates.jsonl"
    table = rw.read_table(cand_path)
    s = rw.scored_from_table(table, cand_path)
    states = {r["state_id"]: r for r in read_jsonl(rollouts_dir / "states.jsonl")}
    missing = set(s.state_ids) - set(states)
    if missing:
        raise MinePairsError(f"{rollouts_dir}/states.jsonl lacks states {sorted(missing)[:3]}; re-run `dvc repro rollouts`")
    rule = presence_rule(rcfg, detector_dir)
    rew = rewards(s, rcfg, horizon, rule)
    ok = eligible(table, pcfg)
    text = table.column("text").to_pylist()
    response = table.column("response").to_pylist()
    adopt = table.column("adopt").to_pylist()
    # identical responses of one state get one key, so they can never face each other
    keys = np.array([int(content_id(r, 12), 16) for r in response], dtype=np.int64)
    metrics: dict[str, Any] = {"candidates": s.n, "states": len(s.state_ids), "candidates_eligible": int(ok.sum()),
                               "continuations": int(s.cont_mask.sum()), "continuation_turns": int(s.turn_mask.sum()),
                               "presence_rule": rule.to_dict() if rcfg.presence == "detector" else "uniform"}
    found: dict[Kind, pairs_core.Pairs] = {}
    for kind in KINDS:
        t_diff = pcfg.t_diff if kind == "value" else pcfg.emotion_t_diff
        p, counts = mine_kind(s, rew[kind], ok, keys, t_diff, pcfg)
        found[kind] = p
        out = []
        for a, b, d in zip(p.chosen.tolist(), p.rejected.tolist(), p.delta.tolist(), strict=True):
            st = states[s.state_ids[s.state[a]]]
            out.append({"id": content_id([kind, st["state_id"], text[a], text[b]]), "kind": kind,
                        "state_id": st["state_id"], "dialogue_id": st["dialogue_id"], "turn": st["turn"],
                        "chosen_id": s.candidate_ids[a], "rejected_id": s.candidate_ids[b], "delta": round(d, 12),
                        "reward_chosen": float(rew[kind].reward[a]), "reward_rejected": float(rew[kind].reward[b]),
                        "history": st["history"], "target_values": st["target_values"], "reference": st["reference"],
                        "chosen": text[a], "rejected": text[b]})
        uniq = list({r["id"]: r for r in out}.values())  # (state, chosen text, rejected text) once
        train, val = split_by_dialogue(uniq, pcfg.validation_fraction, seed)
        write_jsonl(out_dir / kind / "train.jsonl", train)
        write_jsonl(out_dir / kind / "validation.jsonl", val)
        deltas = p.delta
        metrics.update({f"{kind}.{k}": v for k, v in counts.items()})
        metrics.update({f"{kind}.t_diff": t_diff, f"{kind}.pairs_unique": len(uniq), f"{kind}.pairs_train": len(train),
                        f"{kind}.pairs_validation": len(val),
                        f"{kind}.states_with_pairs": len({r["state_id"] for r in uniq}),
                        f"{kind}.chosen_adoption_rate": _rate([adopt[a] == "Yes" for a in p.chosen.tolist()]),
                        f"{kind}.rejected_adoption_rate": _rate([adopt[b] == "Yes" for b in p.rejected.tolist()]),
                        f"{kind}.delta_hist": histogram(deltas)})
        metrics.update(distribution(rew[kind].reward, f"{kind}.reward"))
        metrics.update(distribution(deltas, f"{kind}.delta"))
    metrics.update(agreement(found, s.n))
    write_jsonl(out_dir / "rewards.jsonl", [
        {"state_id": s.state_ids[s.state[i]], "candidate_id": s.candidate_ids[i], "eligible": bool(ok[i]),
         "value": float(rew["value"].reward[i]), "emotion": float(rew["emotion"].reward[i]),
         "value_n": rew["value"].per_turn[i][s.cont_mask[i]].tolist()} for i in range(s.n)])
    raw: dict[str, dict[str, list[float]]] = {"delta": {k: found[k].delta.tolist() for k in KINDS},
                                              "reward": {k: rew[k].reward.tolist() for k in KINDS}}
    return metrics, raw


def agreement(found: dict[Kind, pairs_core.Pairs], n: int) -> dict[str, float]:
    """How the two rewards relate on the same rollouts: value pairs that are also emotion pairs, and reversed."""
    v = {(int(a), int(b)) for a, b in zip(found["value"].chosen, found["value"].rejected, strict=True)}
    e = {(int(a), int(b)) for a, b in zip(found["emotion"].chosen, found["emotion"].rejected, strict=True)}
    return {"value_pairs_also_emotion": float(len(v & e)), "value_pairs_reversed_by_emotion":
            float(len({(b, a) for a, b in v} & e))}


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0
