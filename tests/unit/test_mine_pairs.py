"""Stage core `mine_pairs` on hand-made rollouts: both rewards from the same candidates, duplicates and malformed
answers kept out of pairs, consistency, the split by dialogue, and the metrics (reward distribution, ΔR)."""

from __future__ import annotations

import pytest

from tasks.common.io import read_jsonl, write_jsonl
from tasks.supporter import mine_pairs
from tests.supporter_data import micro_params

A, B = "Achievement", "Hedonism"


def cont(*turns: tuple[float, float]) -> list[dict]:
    """A continuation: per seeker turn (prob of A, positivity); B never present."""
    return [{"utterance": f"seeker says something {i}", "emotion_intensity": 3, "end": False,
             "value_probs": {A: pa, B: 0.0}, "positivity": pos} for i, (pa, pos) in enumerate(turns)]


def cand(state: str, j: int, conts: list, text: str | None = None, **kw) -> dict:
    text = text or f"Response: candidate {state}/{j}"
    return {"state_id": state, "candidate_id": f"{state}-{j}", "dialogue_id": f"d-{state}", "turn": 1,
            "target_values": [A, B], "seeker_intensity_before": 4, "index": j, "text": text,
            "response": text.removeprefix("Response: "), "well_formed": kw.get("well_formed", True),
            "adopt": kw.get("adopt", "No"), "duplicate_of": kw.get("duplicate_of"), "continuations": conts}


@pytest.fixture
def rollouts_dir(tmp_path):
    rows = [
        # state s1: c0 voices A in every turn, c1 never, c2 a copy of c0 (duplicate), c3 malformed but strong
        cand("s1", 0, [cont((0.9, 0.1), (0.9, 0.1)), cont((0.9, 0.2), (0.9, 0.2))], adopt="Yes"),
        cand("s1", 1, [cont((0.1, 0.9), (0.1, 0.9)), cont((0.1, 0.8), (0.1, 0.8))]),
        cand("s1", 2, [cont((0.9, 0.1), (0.9, 0.1)), cont((0.9, 0.2), (0.9, 0.2))], text="Response: candidate s1/0",
             duplicate_of="s1-0"),
        cand("s1", 3, [cont((0.9, 0.0), (0.9, 0.0)), cont((0.9, 0.0), (0.9, 0.0))], well_formed=False),
        # state s2: c0 wins on average (1.5, 1.5, 0 vs 0, 0, 1) but loses continuation 3 (inconsistent)
        cand("s2", 0, [cont((0.9, 0.5), (0.9, 0.5)), cont((0.9, 0.5), (0.9, 0.5)), cont((0.1, 0.5))]),
        cand("s2", 1, [cont((0.1, 0.5)), cont((0.1, 0.5)), cont((0.9, 0.5))]),
    ]
    states = [{"state_id": s, "dialogue_id": f"d-{s}", "persona_id": "p", "turn": 1,
               "history": [["seeker", "hello"]], "target_values": [A, B], "reference": "ref",
               "seeker_intensity_before": 4} for s in ("s1", "s2")]
    write_jsonl(tmp_path / "rollouts" / "candidates.jsonl", rows)
    write_jsonl(tmp_path / "rollouts" / "states.jsonl", states)
    return tmp_path


def _run(root, **pairs):
    cfg = micro_params({"supporter": {"reward": {"presence": "uniform", "threshold": 0.5, "gamma": 0.5},
                                      "pairs": {"t_diff": 0.5, "emotion_t_diff": 0.1, "consistent": True,
                                                "well_formed_only": True, "validation_fraction": 0.0, **pairs}}})
    s = cfg.supporter
    return mine_pairs.run(root / "rollouts", root / "pairs", s.reward, s.pairs, 2, root / "no-detector", 1)


def test_value_and_emotion_pairs_from_the_same_rollouts(rollouts_dir):
    metrics, raw = _run(rollouts_dir)
    value = list(read_jsonl(rollouts_dir / "pairs" / "value" / "train.jsonl"))
    emotion = list(read_jsonl(rollouts_dir / "pairs" / "emotion" / "train.jsonl"))
    # value: s1 c0 (R = 1 + 0.5 = 1.5) over c1 (0); the duplicate c2 and the malformed c3 never enter; s2 is
    # inconsistent (c0 loses continuation 2)
    assert [(p["chosen_id"], p["rejected_id"]) for p in value] == [("s1-0", "s1-1")]
    assert value[0]["delta"] == pytest.approx(1.5) and value[0]["chosen"] != value[0]["rejected"]
    assert value[0]["history"] == [["seeker", "hello"]] and value[0]["reference"] == "ref"
    # emotion (positivity): s1 c1 (1.35, 1.2 -> 1.275) over c0 (0.15, 0.3 -> 0.225), the value pair reversed;
    # s2 c0 (0.75, 0.75, 0.5) over c1 (0.5 each): a gap of 0.17 that no continuation contradicts
    assert [(p["chosen_id"], p["rejected_id"]) for p in emotion] == [("s1-1", "s1-0"), ("s2-0", "s2-1")]
    assert metrics["value_pairs_reversed_by_emotion"] == 1 and metrics["value_pairs_also_emotion"] == 0
    assert metrics["value.dropped_inconsistent"] == 1 and metrics["candidates_eligible"] == 4
    assert metrics["value.chosen_adoption_rate"] == 1.0 and metrics["value.rejected_adoption_rate"] == 0.0
    assert sum(metrics["value.delta_hist"]["counts"]) == 1 and metrics["value.reward.n"] == 6
    assert metrics["continuations"] == 4 * 2 + 2 * 3
    assert len(raw["reward"]["value"]) == 6 and raw["delta"]["value"] == pytest.approx([1.5])


def test_switches_and_split_by_dialogue(rollouts_dir):
    m, _ = _run(rollouts_dir, consistent=False, well_formed_only=False, validation_fraction=0.5)
    value = (list(read_jsonl(rollouts_dir / "pairs" / "value" / "train.jsonl")),
             list(read_jsonl(rollouts_dir / "pairs" / "value" / "validation.jsonl")))
    ids = {(p["chosen_id"], p["rejected_id"]) for side in value for p in side}
    # s1: c0 and c3 (1.5) over c1; s2: c0 (1.0) over c1 (0.33) despite continuation 3
    assert ids == {("s1-0", "s1-1"), ("s1-3", "s1-1"), ("s2-0", "s2-1")}
    for side in value:  # a dialogue's pairs all on one side
        assert len({p["dialogue_id"] for p in side}) <= 1
    assert {p["dialogue_id"] for p in value[0]}.isdisjoint({p["dialogue_id"] for p in value[1]})


def test_detector_presence_needs_the_detector(rollouts_dir):
    cfg = micro_params()
    with pytest.raises(mine_pairs.MinePairsError, match="train_value_detector"):
        mine_pairs.run(rollouts_dir / "rollouts", rollouts_dir / "pairs", cfg.supporter.reward, cfg.supporter.pairs,
                       2, rollouts_dir / "no-detector", 1)
