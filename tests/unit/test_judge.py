"""The judge: one call per dimension, rationale before an integer 1-5 that the schema enforces; an out-of-range or
non-integer score is rejected and re-asked through the LLM layer; pairwise verdicts need both orders to agree."""

from __future__ import annotations

import asyncio
import json

import pytest

from tasks.evaluate import judge
from tasks.llm.client import LLM, Role
from tests.fakes.mock_llm import MockServer

DIALOGUE = {"id": "d1", "turns": [{"role": "seeker", "text": "I failed my exam", "intensity": 4},
                                  {"role": "supporter", "text": "That sounds hard. What happened?", "intensity": None,
                                   "adopt_reference": "No", "reference": "SECRET REFERENCE"}]}
RUBRICS = {d: f"rubric of {d}" for d in judge.DIMENSIONS}


def _judge_script(bad: str, recover: bool):
    """Judge answers: `bad` on the first attempt; a valid score after a re-ask when `recover`."""
    def script(body):
        rf = body.get("response_format") or {}
        if not rf.get("json_schema", {}).get("name", "").startswith("judge_"):
            return None
        reasked = any("That answer is invalid" in m["content"] for m in body["messages"])
        return json.dumps({"rationale": "ok", "score": 4}) if reasked and recover else bad
    return script


def _run(m, coro_fn, tmp_path, max_reasks=2):
    llm = LLM({"judge": Role("judge", m.url, "mock", 0.0, 100)}, tmp_path / "cache.sqlite", max_reasks=max_reasks)

    async def go():
        try:
            return await coro_fn(llm)
        finally:
            await llm.aclose()

    return asyncio.run(go()), llm.ledger.roles["judge"]


@pytest.mark.parametrize("bad", ['{"rationale": "great", "score": 7}', '{"rationale": "fine", "score": 4.5}',
                                 '{"score": 3, "rationale": "x", "extra": 1}', '{"rationale": "no score"}'])
def test_out_of_range_or_malformed_scores_are_rejected_and_reasked(tmp_path, bad):
    with MockServer(script=_judge_script(bad, recover=True)) as m:
        out, led = _run(m, lambda llm: judge.judge_dialogue(llm, "judge", DIALOGUE, RUBRICS), tmp_path)
    assert set(out) == set(judge.DIMENSIONS)
    assert all(v["score"] == 4 and v["rationale"] == "ok" for v in out.values())
    assert led.reasks == 4 and led.calls == 4 and led.failures == 0  # one re-ask per dimension


def test_a_judge_that_never_complies_leaves_the_score_missing(tmp_path):
    with MockServer(script=_judge_script('{"rationale": "x", "score": 0}', recover=False)) as m:
        out, led = _run(m, lambda llm: judge.judge_dialogue(llm, "judge", DIALOGUE, RUBRICS), tmp_path, 1)
    assert all(v["score"] is None and "invalid" in v["error"] for v in out.values())
    assert led.failures == 4 and led.reasks == 4


def test_the_judge_sees_replies_not_reasoning(tmp_path):
    seen = []

    def script(body):
        seen.append(body)
        return None

    with MockServer(script=script) as m:
        out, _ = _run(m, lambda llm: judge.judge_dialogue(llm, "judge", DIALOGUE, RUBRICS), tmp_path)
    assert all(1 <= v["score"] <= 5 for v in out.values())
    assert len(seen) == 4  # one call per dimension
    for body in seen:
        text = " ".join(msg["content"] for msg in body["messages"])
        assert "What happened?" in text and "SECRET REFERENCE" not in text
        props = body["response_format"]["json_schema"]["schema"]["properties"]
        assert list(props) == ["rationale", "score"]  # rationale first
        assert props["score"] == {"type": "integer", "enum": [1, 2, 3, 4, 5]}


def test_pairwise_needs_both_orders_to_agree():
    assert judge.combine_orders("A", "B") == "x" and judge.combine_orders("B", "A") == "y"
    assert judge.combine_orders("A", "A") == "tie" and judge.combine_orders("tie", "B") == "tie"


def test_pairwise_asks_both_orders(tmp_path):
    other = {**DIALOGUE, "id": "d2", "turns": [DIALOGUE["turns"][0],
                                              {"role": "supporter", "text": "Whatever.", "intensity": None}]}

    def script(body):  # a position-biased judge: always prefers A
        if "Conversation A" in body["messages"][1]["content"]:
            return json.dumps({"rationale": "A first", "winner": "A"})
        return None

    with MockServer(script=script) as m:
        out, led = _run(m, lambda llm: judge.compare(llm, "judge", DIALOGUE, other, "better?"), tmp_path)
    assert out == {"verdict": "tie", "orders": ["A", "A"]} and led.calls == 2
