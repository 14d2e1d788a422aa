"""The automatic metrics of a dialogue, declared once (formulas and reasons: docs/evaluation.md).

A dialogue is the contract record of `esvr evaluate dialogues` (docs/CONTRACTS.md):
`{"id", "turns": [{"role": "seeker"|"supporter", "text", "intensity": int|null, ...}, ...]}`. Supporter turns may
carry what the policy reasoned (`answer`, `adopt_reference`, `strategy`, ...); seeker turns the intensity they
reported. Values are counted with the one presence rule (tasks/annotators/presence.py), restricted to the positive
(growth) categories of tasks.domain.taxonomy.POSITIVE_VALUES:

* Seeker-Value = |{seeker turns after the first supporter turn that express >= 1 positive value}| / |those turns|
* Supporter-Value = |{supporter turns that express >= 1 positive value the seeker expressed in an earlier turn}|
  / |supporter turns|
* Intensity = the intensity reported with the dialogue's last seeker turn (null when that turn has none)

An empty share (no seeker turn after a supporter turn) is 0.0 and flagged by its count, so both values stay in
[0, 1] as the contract says.

Pure: `validate_dialogue`, `score_dialogue` (given the present values of each turn), `summarise`; `score_dialogues`
runs the detector once over every turn of every dialogue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from tasks.domain.strategies import STRATEGIES
from tasks.domain.taxonomy import POSITIVE_VALUES

ROLES = ("seeker", "supporter")
#: Per-dialogue numbers whose means a scored file reports (judge dimensions are added when judged).
MEAN_KEYS = ("seeker_value", "supporter_value", "final_intensity", "initial_intensity", "intensity_drop",
             "adoption_rate", "malformed_share")

Present = Callable[[Sequence[str]], list[list[str]]]


class DialogueError(ValueError):
    """A dialogue that does not follow the contract; the message names where and which key."""


def validate_dialogue(obj: Any, where: str) -> dict[str, Any]:
    """Check one contract record (`where` is e.g. `file.jsonl:3`); returns it unchanged."""
    if not isinstance(obj, dict):
        raise DialogueError(f"{where}: a dialogue must be a JSON object, got {type(obj).__name__}")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        raise DialogueError(f"{where}: key 'id' must be a non-empty string")
    turns = obj.get("turns")
    if not isinstance(turns, list) or not turns:
        raise DialogueError(f"{where}: key 'turns' must be a non-empty list")
    for i, t in enumerate(turns):
        at = f"{where}: turns[{i}]"
        if not isinstance(t, dict):
            raise DialogueError(f"{at}: must be an object")
        if t.get("role") not in ROLES:
            raise DialogueError(f"{at}.role: must be 'seeker' or 'supporter', got {t.get('role')!r}")
        if not isinstance(t.get("text"), str):
            raise DialogueError(f"{at}.text: must be a string")
        inten = t.get("intensity")
        if inten is not None and (isinstance(inten, bool) or not isinstance(inten, int) or not 1 <= inten <= 5):
            raise DialogueError(f"{at}.intensity: must be an integer 1-5 or null, got {inten!r}")
    return obj


def positive(values: Sequence[str]) -> set[str]:
    return {v for v in values if v in POSITIVE_VALUES}


def _share(num: int, den: int) -> float:
    return num / den if den else 0.0


def score_dialogue(d: dict[str, Any], present: list[list[str]]) -> dict[str, Any]:
    """The metrics of one dialogue; `present[i]` are the value categories present in `d["turns"][i]["text"]`."""
    turns = d["turns"]
    if len(present) != len(turns):
        raise ValueError(f"dialogue {d['id']}: {len(present)} value sets for {len(turns)} turns")
    seen: set[str] = set()  # positive values the seeker has expressed so far
    supporter_seen = False
    seeker_scored = seeker_pos = sup_turns = sup_reinforcing = 0
    seeker_values, supporter_values, reinforced = [], [], []
    for t, vals in zip(turns, present, strict=True):
        pos = positive(vals)
        if t["role"] == "seeker":
            seeker_values.append(sorted(pos))
            if supporter_seen:  # the opening precedes any support: it is the same for every variant
                seeker_scored += 1
                seeker_pos += bool(pos)
            seen |= pos
        else:
            supporter_seen = True
            sup_turns += 1
            echo = pos & seen
            supporter_values.append(sorted(pos))
            reinforced.append(sorted(echo))
            sup_reinforcing += bool(echo)
    seekers = [t for t in turns if t["role"] == "seeker"]
    final = seekers[-1].get("intensity") if seekers else None
    initial = seekers[0].get("intensity") if seekers else None
    sup = [t for t in turns if t["role"] == "supporter"]
    adopt = [t["adopt_reference"] for t in sup if t.get("adopt_reference") in ("Yes", "No")]
    strategies = Counter(t["strategy"] for t in sup if t.get("strategy") in STRATEGIES)
    malformed = [bool(t.get("malformed")) for t in sup]
    return {
        "id": d["id"],
        "seeker_value": _share(seeker_pos, seeker_scored),
        "supporter_value": _share(sup_reinforcing, sup_turns),
        "final_intensity": final,
        "initial_intensity": initial,
        "intensity_drop": (initial - final) if initial is not None and final is not None and len(seekers) > 1
        else None,
        "n_turns": len(turns), "n_seeker_turns": len(seekers), "n_seeker_turns_scored": seeker_scored,
        "n_supporter_turns": sup_turns, "seeker_positive_turns": seeker_pos,
        "supporter_reinforcing_turns": sup_reinforcing,
        "adoption_rate": (adopt.count("Yes") / len(adopt)) if adopt else None,
        "strategies": dict(sorted(strategies.items())),
        "malformed_share": (sum(malformed) / len(malformed)) if malformed else None,
        "seeker_turn_values": seeker_values, "supporter_turn_values": supporter_values,
        "reinforced_values": reinforced,
    }


def score_dialogues(dialogues: list[dict[str, Any]], present: Present) -> list[dict[str, Any]]:
    """Score every dialogue; the presence function sees all turns at once (one batched detector pass)."""
    texts = [t["text"] for d in dialogues for t in d["turns"]]
    found = present(texts) if texts else []
    out, i = [], 0
    for d in dialogues:
        n = len(d["turns"])
        out.append(score_dialogue(d, found[i:i + n]))
        i += n
    return out


def summarise(scored: list[dict[str, Any]], keys: Sequence[str] = MEAN_KEYS) -> dict[str, Any]:
    """Plain means of the per-dialogue numbers (None values skipped) with their counts, and strategy shares."""
    means: dict[str, Any] = {"dialogues": len(scored)}
    for k in keys:
        xs = [float(r[k]) for r in scored if r.get(k) is not None]
        means[k] = sum(xs) / len(xs) if xs else None
        means[f"{k}_n"] = len(xs)
    strat: Counter[str] = Counter()
    for r in scored:
        strat.update(r.get("strategies", {}))
    total = sum(strat.values())
    means["strategy_shares"] = {s: strat[s] / total for s in STRATEGIES} if total else {}
    return means
