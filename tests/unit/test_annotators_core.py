"""Pure pieces of the annotators: the official Touché measure, threshold search, batching, positivity, ESConv groups."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from tasks import esconv_analysis as esconv
from tasks.annotators import classifier as A
from tasks.annotators.presence import PresenceRule
from tasks.domain.taxonomy import POSITIVE_MASK, VALUE_CATEGORIES


def test_touche_f1_is_harmonic_mean_of_macro_precision_and_recall():
    y = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float32)
    p = np.array([[1, 1], [0, 1], [0, 0]], dtype=np.float32)
    # label 0: P = 1/1, R = 1/2; label 1: P = 1/2, R = 1/2 -> macro P = .75, macro R = .5, F1 = .6
    m = A.touche_f1(y, p)
    assert m["macro_precision"] == pytest.approx(0.75)
    assert m["macro_recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.6)
    assert A.macro_f1(y, p) == pytest.approx((2 / 3 + 0.5) / 2)


def test_no_predictions_score_zero_not_nan():
    y = np.array([[1, 0]], dtype=np.float32)
    m = A.touche_f1(y, np.zeros_like(y))
    assert m == {"f1": 0.0, "macro_precision": 0.0, "macro_recall": 0.0}


def test_choose_thresholds_finds_the_separating_cut():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < 0.3).astype(np.float32)
    probs = np.where(y == 1, 0.35, 0.1) + rng.random((200, 3)) * 0.05  # positives sit at .35-.40, negatives below .15
    g = A.choose_thresholds(probs, y, "touche_f1", "global")
    assert len(set(g)) == 1 and 0.15 <= g[0] <= 0.35
    assert A.touche_f1(y, (probs >= g).astype(np.float32))["f1"] == pytest.approx(1.0)
    per = A.choose_thresholds(probs, y, "macro_f1", "per_category")
    assert per.shape == (3,) and A.macro_f1(y, (probs >= per).astype(np.float32)) == pytest.approx(1.0)


def test_length_batches_sort_and_respect_the_token_budget():
    ids = [[0] * n for n in (5, 50, 7, 48, 6, 49)]
    batches = A.length_batches(ids, batch_size=4, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) * max(len(ids[i]) for i in b) <= 100 or len(b) == 1
    assert set(batches[0]) <= {1, 3, 5}  # longest first


def test_bucketed_epoch_covers_every_row_once():
    lengths = [random.Random(1).randint(3, 60) for _ in range(103)]
    batches = A.bucketed_epoch(lengths, 8, random.Random(2), pool=4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103)) and max(len(b) for b in batches) == 8


def test_positivity_is_positive_share_and_neg_intensity_is_the_strongest_negative():
    names = ["joy", "sadness", "neutral", "surprise"]
    groups = {"positive": [0], "negative": [1], "ambiguous": [3]}
    probs = np.array([[0.9, 0.1, 0.0, 0.0], [0.1, 0.9, 0.0, 0.0], [0.0, 0.0, 0.9, 0.9]], dtype=np.float32)
    pos, neg = A.positivity_scores(probs, groups)
    assert pos[0] == pytest.approx(0.9) and pos[1] == pytest.approx(0.1) and pos[2] == pytest.approx(0.5)
    assert list(neg) == pytest.approx([0.1, 0.9, 0.0])
    assert len(names) == probs.shape[1]


def test_sentiment_groups_reject_unknown_emotions(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"positive": ["joy", "bliss"], "negative": []}')
    with pytest.raises(ValueError, match="bliss"):
        A.sentiment_groups(p, ["joy", "sadness"])


def test_read_touche_rejects_a_bad_header(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("id\ttext\nx\ty\n")
    with pytest.raises(ValueError, match="header"):
        A.read_touche(p)


def _conv(initial, final, seeker_turns):
    dialog = []
    for t in seeker_turns:
        dialog += [{"speaker": "usr", "text": t}, {"speaker": "sys", "text": "ok", "strategy": "Question"}]
    return {"survey_score": {"seeker": {"initial_emotion_intensity": str(initial), "final_emotion_intensity": final}},
            "dialog": dialog}


def test_esconv_groups_and_last_turns():
    assert esconv.group_of(_conv(5, "1", [])) == "high_effect"
    assert esconv.group_of(_conv(5, "4", [])) == "low_effect"
    assert esconv.group_of(_conv(5, "", [])) == "no_final"
    assert esconv.group_of(_conv(3, "1", [])) is None
    assert esconv.last_seeker_turns(_conv(5, "1", list("abcdef")), 4) == list("cdef")


def test_esconv_analysis_counts_positive_values_only():
    pos_j = POSITIVE_MASK.index(True)
    neg_j = POSITIVE_MASK.index(False)
    convs = [_conv(5, "1", ["P", "P"]), _conv(5, "2", ["P", "x"]), _conv(5, "5", ["N", "x"]), _conv(5, "4", ["x"])]

    def predict(texts):
        out = np.zeros((len(texts), len(VALUE_CATEGORIES)), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, pos_j if t == "P" else neg_j] = 0.9 if t in "PN" else 0.0
        return out

    cfg = SimpleNamespace(limit=0, initial_intensity=5, high_final=[1, 2], last_turns=4, test="mannwhitney",
                          bootstrap=200)
    rule = PresenceRule.uniform(0.5, min_chars=1)
    res = esconv.analyse(convs, lambda texts: rule.present(texts, predict(texts)), cfg, seed=3)
    high, low = res["high_effect"], res["low_effect"]
    assert (high["n"], high["mean_positive_values_last4"], high["share_with_any"]) == (2, 1.5, 1.0)
    assert high["mean_values_last4"] == 1.5 and high["paper_mean_positive_values_last4"] == 7.9
    assert high["ci95"] == [1.0, 2.0]  # two conversations scoring 2 and 1: every resample mean lies in [1, 2]
    assert low["n"] == 2 and low["mean_positive_values_last4"] == 0.0 and low["mean_values_last4"] == 0.5
    assert res["difference"]["mean"] == 1.5 and res["difference"]["paper"] == pytest.approx(1.4)
    assert 0.0 < res["p_value"] <= 1.0
    # the presence rule's length floor: "P" (1 char) carries no value once min_chars is 2
    strict = PresenceRule.uniform(0.5, min_chars=2)
    assert esconv.analyse(convs, lambda t: strict.present(t, predict(t)), cfg)["high_effect"]["share_with_any"] == 0.0
