"""Seeker-/Supporter-Value, Intensity, adoption and strategies on hand-built dialogues (docs/evaluation.md), with a
keyword presence function standing in for the detector: the formulas are the point here, not the detector."""

from __future__ import annotations

import pytest

from tasks.evaluate import metrics
from tasks.evaluate.human import normalise_strategy, to_dialogue

# word -> value category (Achievement, Benevolence: caring are positive; Security: personal is not)
WORDS = {"goal": "Achievement", "help": "Benevolence: caring", "safe": "Security: personal"}


def present(texts):
    return [[v for w, v in WORDS.items() if w in t.lower()] for t in texts]


def dialogue(*turns, did="d1"):
    return {"id": did, "turns": [{"role": r, "text": t, "intensity": i, **extra} for r, t, i, *rest in turns
                                 for extra in [rest[0] if rest else {}]]}


def score(d):
    return metrics.score_dialogues([d], present)[0]


def test_seeker_value_skips_the_opening_and_counts_positive_values_only():
    d = dialogue(("seeker", "my goal fell apart", 5),          # opening: not scored (no support yet)
                 ("supporter", "tell me more", None),
                 ("seeker", "I want to be safe", 4),            # Security: personal is not a positive value
                 ("supporter", "what matters to you?", None),
                 ("seeker", "I want to help my sister", 3))     # positive
    r = score(d)
    assert r["n_seeker_turns_scored"] == 2 and r["seeker_positive_turns"] == 1
    assert r["seeker_value"] == pytest.approx(0.5)
    assert r["final_intensity"] == 3 and r["initial_intensity"] == 5 and r["intensity_drop"] == 2


def test_supporter_value_counts_echoes_of_earlier_seeker_values():
    d = dialogue(("seeker", "my goal is a job", 4),
                 ("supporter", "your goal matters", None),           # echoes Achievement: reinforces
                 ("seeker", "ok", 4),
                 ("supporter", "you help others a lot", None),        # Benevolence not voiced by the seeker yet
                 ("seeker", "I do help", 3),
                 ("supporter", "keep being safe", None))             # not positive
    r = score(d)
    assert r["n_supporter_turns"] == 3 and r["supporter_reinforcing_turns"] == 1
    assert r["supporter_value"] == pytest.approx(1 / 3)
    assert r["reinforced_values"] == [["Achievement"], [], []]


def test_a_value_the_seeker_voices_later_does_not_count_backwards():
    d = dialogue(("seeker", "hello", 4), ("supporter", "set a goal", None), ("seeker", "my goal!", 3))
    r = score(d)
    assert r["supporter_value"] == 0.0 and r["seeker_value"] == 1.0


def test_empty_shares_are_zero_and_flagged():
    r = score(dialogue(("seeker", "my goal", 4), ("supporter", "hm", None)))
    assert r["seeker_value"] == 0.0 and r["n_seeker_turns_scored"] == 0
    assert r["final_intensity"] == 4 and r["intensity_drop"] is None  # one seeker turn: no drop to report


def test_final_intensity_is_the_last_seeker_turns_even_when_null():
    r = score(dialogue(("seeker", "a", 5), ("supporter", "b", None), ("seeker", "c", None)))
    assert r["final_intensity"] is None and r["initial_intensity"] == 5


def test_adoption_strategies_and_malformed_answers():
    d = dialogue(("seeker", "a", 3),
                 ("supporter", "b", None, {"adopt_reference": "Yes", "strategy": "Question"}),
                 ("seeker", "c", 3),
                 ("supporter", "d", None, {"adopt_reference": "No", "strategy": "Question"}),
                 ("seeker", "e", 3),
                 ("supporter", "f", None, {"malformed": True, "strategy": "not a strategy"}))
    r = score(d)
    assert r["adoption_rate"] == 0.5 and r["strategies"] == {"Question": 2}
    assert r["malformed_share"] == pytest.approx(1 / 3)
    means = metrics.summarise([r, score(dialogue(("seeker", "a", 2), ("supporter", "b", None)))])
    assert means["dialogues"] == 2 and means["adoption_rate_n"] == 1
    assert means["final_intensity"] == pytest.approx(2.5) and means["strategy_shares"]["Question"] == 1.0


@pytest.mark.parametrize("bad, key", [
    ({"turns": []}, "'id'"),
    ({"id": "x", "turns": []}, "'turns'"),
    ({"id": "x", "turns": [{"role": "bot", "text": "a"}]}, "turns[0].role"),
    ({"id": "x", "turns": [{"role": "seeker", "text": 3}]}, "turns[0].text"),
    ({"id": "x", "turns": [{"role": "seeker", "text": "a", "intensity": 7}]}, "turns[0].intensity"),
    ({"id": "x", "turns": [{"role": "seeker", "text": "a", "intensity": True}]}, "turns[0].intensity"),
])
def test_bad_dialogues_name_where_and_which_key(bad, key):
    with pytest.raises(metrics.DialogueError) as e:
        metrics.validate_dialogue(bad, "f.jsonl:7")
    assert "f.jsonl:7" in str(e.value) and key in str(e.value)


def test_esconv_conversation_becomes_an_alternating_dialogue_with_survey_intensities():
    conv = {"situation": "s", "survey_score": {"seeker": {"initial_emotion_intensity": "5",
                                                          "final_emotion_intensity": "2"}},
            "dialog": [{"speaker": "sys", "text": "Hi", "strategy": "Others"},
                       {"speaker": "usr", "text": "hello"}, {"speaker": "usr", "text": "I am sad"},
                       {"speaker": "sys", "text": "Why?", "strategy": "Question"},
                       {"speaker": "sys", "text": "I was sad too", "strategy": "Self-disclosure"},
                       {"speaker": "usr", "text": "thanks"}]}
    d = to_dialogue(conv, "esconv-test:0")
    assert [t["role"] for t in d["turns"]] == ["supporter", "seeker", "supporter", "seeker"]
    assert d["turns"][1]["text"] == "hello I am sad" and d["turns"][1]["intensity"] == 5
    assert d["turns"][3]["intensity"] == 2 and d["turns"][2]["strategy"] == "Question"
    assert d["turns"][2]["strategies"] == ["Question", "Self-disclosure"]
    metrics.validate_dialogue(d, "esconv")
    assert score(d)["final_intensity"] == 2
    assert normalise_strategy("[Questions]") == "Question" and normalise_strategy("Other") == "Others"
    assert normalise_strategy("nonsense") is None
