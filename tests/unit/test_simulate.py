"""tasks/simulate.py core: per-turn seeker replies, TVD slots resampled only where they repeat, the teacher's response
agreeing with its adoption decision, dialogue seeds from the params seed, the minimum dialogue length."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tasks import simulate
from tasks.domain import prompts
from tasks.domain.sim_prompts import TEACHER_SCHEMA, seeker_schema, teacher_response, tvd_regex
from tasks.domain.taxonomy import VALUE_CATEGORIES
from tasks.llm.client import LLM, Role
from tests.fakes.mock_llm import MockServer, regex_answer

PERSONA = {"id": "p1", "problem_type": "job crisis", "emotion_type": "anxiety", "initial_intensity": 4,
           "context": "You are a person."}


class ScriptedLLM:
    """Answers each role from a script (a function of the call) and records every call."""

    def __init__(self, tvd_answers: list[str], seeker_end: bool = True):
        self.tvd_answers, self.seeker_end = list(tvd_answers), seeker_end
        self.calls: list[dict[str, Any]] = []

    async def ask(self, role: str, messages: list[dict[str, str]], **kw: Any) -> Any:
        self.calls.append({"role": role, **kw})
        if role == "tvd":
            text = self.tvd_answers.pop(0) if self.tvd_answers else regex_answer(kw["regex"], str(len(self.calls)))
            return kw["check"](text)
        if role == "rg":
            return "a reference"
        if role == "seeker":
            may_end = "end_conversation" in kw["schema"]["properties"]
            k = sum(c["role"] == "seeker" for c in self.calls)
            return {"utterance": f"seeker says {k}", "emotion_intensity": 1 + k % 5,
                    "end_conversation": self.seeker_end and may_end}
        return {"issue_and_state": "s", "reference_key_content": "r", "adopt_reference": "Yes" if len(self.calls) % 2
                else "No", "adopt_reason": "why", "strategy": "Question", "alt_response_with_reference": "with ref",
                "alt_response_without_reference": "without ref"}


def _run(llm: Any, min_turns: int = 3, max_turns: int = 4) -> dict[str, Any]:
    return asyncio.run(simulate.simulate_dialogue(llm, PERSONA, min_turns, max_turns, "did"))


def test_every_supporter_turn_records_the_seeker_reply_after_it():
    sim = _run(ScriptedLLM([]))
    turns = sim["turns"]
    assert len(turns) == 3 and sim["ended_by"] == "seeker"  # the seeker wanted to leave at once: not before 3 turns
    for k, t in enumerate(turns, 1):
        reply = t["seeker_reply"]
        assert reply == {"utterance": f"seeker says {k + 1}", "emotion_intensity": 1 + (k + 1) % 5,
                         "end": k == 3}
        assert sim["history"][2 * k] == ("seeker", reply["utterance"])  # it is the next seeker turn of the history
        assert t["response"] == teacher_response(t)
        assert t["response"] == (t["alt_response_with_reference"] if t["adopt_reference"] == "Yes"
                                 else t["alt_response_without_reference"])
        assert len(t["target_values"]) == len(set(t["target_values"])) == prompts.TVD_K
    rec = simulate.to_record("did", {**PERSONA}, sim)
    assert rec["meta"]["n_supporter_turns"] == 3 and rec["meta"]["final_seeker_utterance"] == "seeker says 4"


def test_max_turns_ends_a_dialogue_the_seeker_never_ends():
    sim = _run(ScriptedLLM([], seeker_end=False), min_turns=1, max_turns=2)
    assert sim["ended_by"] == "max_turns" and [t["seeker_reply"]["end"] for t in sim["turns"]] == [False, False]


def test_seeker_schema_forbids_ending_before_min_turns():
    assert "end_conversation" not in seeker_schema(False)["properties"]  # ask_seeker records false
    assert seeker_schema(True)["properties"]["end_conversation"] == {"type": "boolean"}
    assert "response" not in TEACHER_SCHEMA["properties"]  # the response is derived, so it cannot disagree


def test_a_repeated_tvd_slot_is_resampled_alone_and_never_hot():
    a, b, c = "Achievement", "Face", "Hedonism"
    llm = ScriptedLLM([f"Values: {a}; {a}; {b}", f"Values: {a}; {b}; {c}"])
    values, rounds = asyncio.run(simulate.target_values(llm, [("seeker", "hi there")], "did", 1))
    assert values == [a, b, c] and rounds == 1
    tvd = [x for x in llm.calls if x["role"] == "tvd"]
    assert len(tvd) == 2 and all(x["hot_reasks"] is False for x in tvd)
    assert tvd[0]["regex"] == tvd_regex()
    second = tvd[1]["regex"]
    assert second.startswith("Values: " + re.escape(a) + "; " + re.escape(b) + "; (")
    assert re.escape(a) not in second.split("; (")[1] and re.escape(c) in second  # only unused names are free
    assert re.fullmatch(second, f"Values: {a}; {b}; {c}") and not re.fullmatch(second, f"Values: {a}; {b}; {a}")
    assert tvd[0]["seed"] != tvd[1]["seed"]


def test_an_endpoint_that_ignores_the_regex_fails_after_k_rounds():
    llm = ScriptedLLM(["Values: Face; Face; Face"] * 3)
    with pytest.raises(simulate.LLMError, match="rounds"):
        asyncio.run(simulate.target_values(llm, [("seeker", "hi")], "did", 1))


def test_dialogue_ids_and_so_every_call_seed_follow_the_params_seed():
    sim = {"min_turns": 3, "max_turns": 4}
    assert simulate.dialogue_id(PERSONA, sim, 1) == simulate.dialogue_id(PERSONA, sim, 1)
    assert simulate.dialogue_id(PERSONA, sim, 1) != simulate.dialogue_id(PERSONA, sim, 2)


def test_tvd_regex_lists_every_category_once_per_free_slot():
    rx = tvd_regex()
    assert all(rx.count(re.escape(v)) == 3 for v in VALUE_CATEGORIES)
    fixed = tvd_regex(fixed=["Face", "Tradition", "Humility"])
    assert fixed == "Values: Face; Tradition; Humility"


def test_mock_server_run_has_the_per_turn_fields(tmp_path):
    from tasks.common.io import read_jsonl, write_jsonl

    write_jsonl(tmp_path / "p.jsonl", [{**PERSONA, "id": f"p{i}"} for i in range(3)])
    with MockServer() as m:
        roles = {r: Role(r, m.url, "mock", 0.0 if r == "tvd" else 0.7, 100) for r in simulate.ROLES}
        llm = LLM(roles, tmp_path / "cache.sqlite", max_concurrency=4)
        sim = {"personas": None, "min_turns": 3, "max_turns": 4, "validation_fraction": 0.0}
        report = simulate.run(llm, tmp_path / "p.jsonl", tmp_path / "out", sim, 5, tmp_path / "prog", 4)
    recs = list(read_jsonl(tmp_path / "out" / "train.jsonl"))
    assert report["min_supporter_turns"] >= 3 and len(recs) == 3
    for r in recs:
        for t in r["turns"]:
            assert set(t["seeker_reply"]) == {"utterance", "emotion_intensity", "end"}
            assert 1 <= t["seeker_reply"]["emotion_intensity"] <= 5 and isinstance(t["seeker_reply"]["end"], bool)
            assert t["response"] == teacher_response(t) and len(set(t["target_values"])) == 3
