"""tasks/domain/prompts.py: the one formatter of histories, TVD answers and RG prompts (hand-computed expectations)."""

from __future__ import annotations

import pytest

from tasks.domain import prompts
from tasks.domain.taxonomy import VALUE_CATEGORIES

HISTORY = [("seeker", "I failed my exam."), ("supporter", "That hurts. What happened?"), ("seeker", "I froze.")]


def test_tvd_messages_shape_and_transcript():
    msgs = prompts.tvd_messages(HISTORY)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Seeker: I failed my exam.\n\nSupporter: That hurts. What happened?\n\nSeeker: I froze." in msgs[1]["content"]


def test_format_and_parse_round_trip_every_category():
    for i in range(0, len(VALUE_CATEGORIES), 3):
        vals = [VALUE_CATEGORIES[(i + j) % len(VALUE_CATEGORIES)] for j in range(3)]
        text = prompts.format_tvd_answer(vals)
        assert text == "Values: " + "; ".join(vals)
        assert prompts.parse_tvd_answer(text) == vals


@pytest.mark.parametrize(
    "bad", [["Achievement", "Achievement", "Face"], [], ["Achievement", "Face", "Hedonism", "Tradition"],
            ["Achievement", "Face", "Kindness"]]
)
def test_format_rejects_invalid(bad):
    with pytest.raises(ValueError):
        prompts.format_tvd_answer(bad)


def test_format_accepts_fewer_values_when_fewer_are_present():
    assert prompts.format_tvd_answer(["Face"]) == "Values: Face"
    assert prompts.parse_tvd_answer(prompts.format_tvd_answer(["Face", "Hedonism"])) == ["Face", "Hedonism"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sure! values: self direction - thought, hedonism, FACE.", ["Self-direction: thought", "Hedonism", "Face"]),
        ("Values: Achievement; Achievement; Face; Hedonism", ["Achievement", "Face", "Hedonism"]),
        ("Values:\nAchievement\nFace\nHedonism\nTradition", ["Achievement", "Face", "Hedonism"]),
        ("Values: Kindness; Face", ["Face"]),
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_is_tolerant_but_only_returns_valid_categories(text, expected):
    assert prompts.parse_tvd_answer(text) == expected


def test_rg_prompt_names_target_values_and_ends_with_user():
    msgs = prompts.rg_prompt(HISTORY, ["Achievement", "Benevolence: caring"])
    assert msgs[-1]["role"] == "user"
    assert "Target values: Achievement; Benevolence: caring" in msgs[-1]["content"]
    full = prompts.rg_sft_messages(HISTORY, ["Achievement"], "You can retake it.")
    assert full[-1] == {"role": "assistant", "content": "You can retake it."}


def test_bad_history_and_values_fail_with_the_position():
    with pytest.raises(ValueError, match=r"history\[1\]"):
        prompts.tvd_messages([("seeker", "a"), ("op", "b")])
    with pytest.raises(ValueError, match="empty"):
        prompts.tvd_messages([])
    with pytest.raises(ValueError, match="unknown value categories"):
        prompts.rg_prompt(HISTORY, ["Kindness"])


def test_history_from_messages_maps_chat_roles():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert prompts.history_from_messages(msgs) == [("seeker", "a"), ("supporter", "b")]
