"""TVD parsing/scoring and DPO preference metrics, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from tasks.train import evaluation as te


def test_parse_values_well_formed_and_case_insensitive():
    names, bad = te.parse_values("Values: hedonism; Face; Universalism: nature")
    assert names == ["Hedonism", "Face", "Universalism: nature"] and not bad


@pytest.mark.parametrize("text,expect", [
    ("Hedonism; Face; Stimulation", ["Hedonism", "Face", "Stimulation"]),  # prefix missing
    ("Values: Hedonism; Hedonism; Face", ["Hedonism", "Face"]),  # duplicate
    ("Values: Hedonism; Fun; Face", ["Hedonism", "Face"]),  # unknown name
    ("Values: Hedonism; Face; Stimulation; Tradition", ["Hedonism", "Face", "Stimulation"]),  # four
    ("", []),
])
def test_parse_values_malformed_counted(text, expect):
    names, bad = te.parse_values(text)
    assert bad and names == expect


@pytest.mark.parametrize("text", ["Values: Hedonism", "Values: Hedonism; Face", "Values: Hedonism; Face; Tradition"])
def test_one_to_three_values_are_well_formed(text):
    # TVD labels name the values present in the next reply: fewer than 3 when fewer are present
    names, bad = te.parse_values(text)
    assert not bad and names == text.removeprefix("Values: ").split("; ")


def test_set_scores_hand_computed():
    # example 1: 2 of 3 right; example 2: 0 of 3 right, gold has 2 -> tp=2 fp=4 fn=1+2=3
    preds = [["Hedonism", "Face", "Stimulation"], ["Tradition", "Humility", "Achievement"]]
    golds = [["Hedonism", "Face", "Power: dominance"], ["Stimulation", "Face"]]
    s = te.set_scores(preds, golds)
    assert s["precision"] == pytest.approx(2 / 6) and s["recall"] == pytest.approx(2 / 5)
    assert s["f1"] == pytest.approx(2 * (2 / 6) * (2 / 5) / (2 / 6 + 2 / 5))


def test_majority_prior_and_tvd_metrics():
    train = [["Face", "Hedonism", "Tradition"], ["Face", "Hedonism", "Humility"], ["Face", "Stimulation", "Humility"]]
    prior = te.majority_prior(train)
    assert prior == ["Face", "Hedonism", "Humility"]  # by count, ties in taxonomy order
    m = te.tvd_metrics(["Values: Face; Hedonism; Humility", "garbage"], [["Face", "Hedonism", "Humility"]] * 2, prior)
    assert m["malformed"] == 1 and m["malformed_share"] == 0.5
    assert m["baseline.f1"] == pytest.approx(1.0) and m["tvd.precision"] == pytest.approx(1.0)
    assert m["tvd.recall"] == pytest.approx(0.5)


def test_preference_metrics_reward_accuracy_and_margin():
    m = te.preference_metrics([-1.0, -5.0], [-2.0, -4.0], [-1.5, -4.0], [-1.5, -4.0], beta=0.5)
    assert m["pref_accuracy"] == 0.5 and m["logp_margin"] == pytest.approx(0.0)
    # margins: 0.5*((-1+1.5)-(-2+1.5)) = 0.5 ; 0.5*((-5+4)-(-4+4)) = -0.5
    assert m["reward_accuracy"] == 0.5 and m["reward_margin"] == pytest.approx(0.0)
    assert "reward_accuracy" not in te.preference_metrics([-1.0], [-2.0])


def test_value_hits():
    assert te.value_hits([["Face"], []], [["Face", "Hedonism"], ["Face"]]) == 0.5
    assert math.isnan(te.value_hits([], []))


def test_tvd_gate_fails_a_model_whose_served_answers_are_unusable():
    """The gate reads the answers as served (regex, then repeated slots resampled): fewer than three distinct
    categories after that is unusable."""
    from tasks.train.common import TrainStageError
    from tasks.train.train_tvd import malformed_gate

    with pytest.raises(TrainStageError, match="max_malformed_share"):
        malformed_gate({"served.malformed_share": 2 / 3}, 0.5)  # the tiny profile's value
    malformed_gate({"served.malformed_share": 1 / 3}, 0.5)


def test_served_tvd_resamples_only_repeated_slots_like_the_consumers():
    """A model that always names one category gets it once, then the other slots are decoded with it fixed."""
    from tasks.domain.sim_prompts import tvd_regex

    calls: list[str | None] = []

    def fake_generate(model, tok, prompts_, max_new_tokens, batch_size, max_length, regex=None):
        calls.append(regex)
        if regex == tvd_regex():
            return ["Values: Face; Face; Face"] * len(prompts_)
        return ["Values: Face; Humility; Tradition"]

    import tasks.train.evaluation as ev
    orig, ev.generate = ev.generate, fake_generate
    try:
        answers, rounds = ev.served_tvd(None, None, [[{"role": "user", "content": "x"}]] * 2, 40, 16, 384)
    finally:
        ev.generate = orig
    assert answers == [["Face", "Humility", "Tradition"]] * 2 and rounds == [1, 1]
    assert calls[0] == tvd_regex() and calls[1] == tvd_regex(fixed=["Face"])


def test_rg_champion_rule_uses_the_held_out_reward_margin_and_the_value_hit_rate():
    from tasks.train.train_rg_dpo import champion_rule

    sft = {"pref_accuracy": 0.27, "value_hit_rate": 0.4}
    tie = {"dpo": {"pref_accuracy": 0.27, "reward_margin": 0.0, "value_hit_rate": 0.5}, "sft": sft}
    assert champion_rule(tie, True)[0] == "sft"  # equal accuracies and no margin: DPO learned nothing
    better = {"dpo": {"pref_accuracy": 0.27, "reward_margin": 0.02, "value_hit_rate": 0.45}, "sft": sft}
    assert champion_rule(better, True) == ("dpo", "dpo reward_margin 0.02 > 0 and value_hit_rate 0.450 >= sft 0.400")
    fewer_hits = {"dpo": {**better["dpo"], "value_hit_rate": 0.3}, "sft": sft}
    assert champion_rule(fewer_hits, True)[0] == "sft" and champion_rule(fewer_hits, False)[0] == "dpo"
