"""`esvr chat` core without a terminal: which prompt a supporter URI gets, the guard before every model call, the
three prompt styles over the OpenAI-compatible fake, failures that leave the conversation going, and the transcript
(whose turns are review-page turns)."""

from __future__ import annotations

import asyncio

import pytest

from tasks.chat import chat
from tasks.chat.guard import EventLog, Guard
from tasks.domain import supporter_format
from tasks.llm.client import LLM, Role
from tasks.review.pairs import parse_pair
from tests.fakes.mock_llm import MockServer
from tests.params import group


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard.load(group("guard"))


@pytest.fixture(scope="module")
def mock():
    with MockServer() as m:
        yield m


def llm_for(url: str, roles=("supporter", "tvd", "rg")) -> LLM:
    return LLM({r: Role(r, url, "mock", 0.7, 100) for r in roles}, ":memory:", max_retries=0, max_reasks=1,
               budget_usd=1.0)


def talk(conv: chat.Conversation, *lines: str) -> list[chat.Reply]:
    async def go():
        out = [await conv.reply(x) for x in lines]
        await conv.llm.aclose()
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("supporter,rg,want", [
    ("http://127.0.0.1:9/v1", None, "teacher"),
    ("models:/reference-generator@champion", "models:/reference-generator@champion", "reference"),
    ("models:/reference-generator@dpo", None, "reference"),
    ("models/rg_dpo", "models/rg_dpo", "reference"),
    ("models:/supporter@dpo", "models:/reference-generator@champion", "supporter"),
    ("models/supporter_dpo", None, "supporter"),
])
def test_auto_prompt(supporter, rg, want):
    assert chat.choose_prompt("auto", supporter, rg) == want
    assert chat.choose_prompt("teacher", supporter, rg) == "teacher"


def test_crisis_turn_calls_no_model_and_is_kept_from_the_history(mock, guard, tmp_path):
    events = EventLog(tmp_path / "ev.jsonl")
    conv = chat.Conversation(llm_for(mock.url), guard, events, "teacher", 12)
    before = mock.state.hits
    first, crisis, after = talk(conv, "I lost my job", "i want to end my life", "thanks")
    assert first.fields and len(first.target_values) == 3 and first.reference
    assert crisis.crisis and "988" in crisis.text and crisis.guard_reason
    assert mock.state.hits - before == 6  # 3 calls per model turn, none for the crisis turn
    assert [r for r, _ in conv.history] == ["seeker", "supporter"] * 2
    assert "end my life" not in " ".join(t for _, t in conv.history)
    assert after.text and not after.malformed
    assert len((tmp_path / "ev.jsonl").read_text().splitlines()) == 1


def test_supporter_prompt_shows_a_malformed_answer_as_it_came(mock, guard):
    conv = chat.Conversation(llm_for(mock.url), guard, EventLog(None), "supporter", 12)
    (r,) = talk(conv, "I feel stuck at work")
    assert r.text.startswith("mock reply") and r.fields is None and r.malformed


def test_supporter_prompt_carries_target_values_and_reference():
    msgs = supporter_format.supporter_messages([("seeker", "hi"), ("supporter", "hello"), ("seeker", "sad")],
                                               ["Achievement", "Hedonism"], "You did\nwell")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[-1]["content"].endswith("Target values: Achievement; Hedonism\nReference response: You did well")
    assert supporter_format.supporter_messages([("seeker", "hi")], [], None)[-1]["content"].endswith(
        "Target values: (none)\nReference response: (none)")
    with pytest.raises(ValueError, match="end with a seeker"):
        supporter_format.supporter_messages([("seeker", "hi"), ("supporter", "x")], [], None)


def test_reference_prompt_needs_a_tvd(mock, guard):
    with pytest.raises(chat.ChatError, match="target value detector"):
        chat.Conversation(llm_for(mock.url, ("supporter",)), guard, EventLog(None), "reference", 12)
    conv = chat.Conversation(llm_for(mock.url, ("supporter", "tvd")), guard, EventLog(None), "reference", 12)
    (r,) = talk(conv, "I failed my exam")
    assert r.text.startswith("mock reply") and r.target_values and not r.malformed


def test_a_failing_helper_or_supporter_does_not_end_the_chat(guard):
    with MockServer(fault_rate=1.0, fault_kinds=("500",)) as bad:
        conv = chat.Conversation(llm_for(bad.url), guard, EventLog(None), "teacher", 12)
        (r,) = talk(conv, "hello")
    assert r.error and "target values unavailable" in r.notes[0]
    assert conv.history == [("seeker", "hello")]


def test_transcript_turns_are_review_turns(tmp_path, mock, guard):
    conv = chat.Conversation(llm_for(mock.url), guard, EventLog(None), "teacher", 12)
    t = chat.Transcript(tmp_path / "t.json", {"supporter": mock.url})
    for line, reply in zip(("hi", "i wish i were dead"), talk(conv, "hi", "i wish i were dead"), strict=True):
        t.add(line, reply)
    import json

    doc = json.loads((tmp_path / "t.json").read_text())
    pair = parse_pair({"pair_id": "x", "a": {"variant": "chat", "turns": doc["turns"]},
                       "b": {"variant": "other", "turns": doc["turns"][:2]}}, "t.json")
    assert [x["role"] for x in pair["a"]["turns"]] == ["seeker", "supporter", "seeker", "supporter"]


def test_missing_helper_warns_or_fails(tmp_path):
    cfg = group("chat")
    notes: list[str] = []
    with MockServer() as m, chat.open_models(m.url, cfg, str(tmp_path / "nope"), None, None, notes) as llm:
        assert set(llm.roles) == {"supporter"} and "tvd off" in notes[0]
        assert llm.roles["supporter"].model == "mock"  # the first model the URL lists
    with pytest.raises(chat.ChatError, match="tvd"):
        with chat.open_models("http://127.0.0.1:9/v1", group("chat", missing_helpers="fail"),
                              str(tmp_path / "nope"), None, None):
            pass
    with pytest.raises(chat.ChatError, match="supporter"):
        with chat.open_models(str(tmp_path / "nope"), cfg, None, None, None):
            pass
