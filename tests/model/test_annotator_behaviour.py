"""Behaviour of the annotators, on small real models trained once per session (tests/conftest.py `small_annotators`):
the presence probes, invariance to casing and whitespace, a value-laden sentence keeps its value, the presence rule's
consumers agree, positivity's direction, and the gates fail a broken model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from tasks.annotators import classifier as A
from tasks.annotators import presence_eval
from tasks.annotators.presence import PresenceRule, ValueDetector, load_detector
from tasks.domain.taxonomy import VALUE_CATEGORIES, VALUE_INDEX

pytestmark = [pytest.mark.mirror, pytest.mark.slow]  # the session trains two small models first (~1 min)

ACCEPTANCE_PROBES = ["", " ", "hi", "thanks!", "ok lol"]
NEUTRAL = "The meeting is on Tuesday at the usual room."


@pytest.fixture(scope="module")
def detector(small_annotators) -> ValueDetector:
    return load_detector(small_annotators["value_detector"])


@pytest.fixture(scope="module")
def emotion_model(small_annotators):
    folder = small_annotators["emotion"]
    model = A.MeanPoolClassifier.load(folder)[0]
    return model, A.sentiment_groups(folder / "sentiment_dict.json", model.label_names)


def _predict_cli(folder, texts, tmp_path) -> list[list[str]]:
    from typer.testing import CliRunner

    from tasks.cli.main import app

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    r = CliRunner().invoke(app, ["values", "predict", "--input", str(inp), "--out", str(out), "--model", str(folder)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in rows] == [str(i) for i in range(len(texts))]
    return [x["predicted"] for x in rows]


def test_the_detector_ships_its_presence_rule(small_annotators):
    folder = small_annotators["value_detector"]
    rule = PresenceRule.from_folder(folder)
    raw = json.loads((folder / "presence.json").read_text())
    assert raw["labels"] == list(VALUE_CATEGORIES) and rule.min_chars == 3
    assert raw["calibration"]["choose_value_free"] > 0 and raw["calibration"]["train_value_free"] == 800
    assert small_annotators["value_summary"]["n_report"] > 0  # the held-back part exists and chose nothing


def test_acceptance_probes_predict_no_category(small_annotators, tmp_path):
    """`esvr values predict` on "", " ", "hi", "thanks!", "ok lol": no category."""
    assert _predict_cli(small_annotators["value_detector"], ACCEPTANCE_PROBES, tmp_path) == [[]] * 5


def test_small_talk_normally_has_no_value(detector):
    mask = detector.mask(presence_eval.PROBES)
    report = presence_eval.probe_report(presence_eval.PROBES, mask)
    assert report["share_no_value"] >= 0.85, f"values on small talk: {report['with_value']}"
    assert not detector.mask(presence_eval.EMPTY_PROBES).any()  # below min_chars: never, whatever the model says


@pytest.mark.parametrize("text", [
    "We must protect the forests, the oceans and the animals from pollution.",
    "I worked hard to succeed and I am ambitious about becoming really capable at my job.",
    "thanks a lot, see you tomorrow",
])
def test_casing_and_whitespace_do_not_change_the_answer(detector, text):
    variants = [text, text.upper(), text.title(), f"  {text}\n", text.replace(" ", "   "), text.replace(" ", "\n\t")]
    probs = detector.probs(variants)
    assert np.allclose(probs, probs[0], atol=1e-4)
    assert all(v == detector.present([text])[0] for v in detector.present(variants))


def test_a_value_laden_sentence_keeps_its_value(detector):
    nature = "We must protect the forests, the oceans and the animals from pollution."
    assert "Universalism: nature" in detector.present([nature])[0]


@pytest.mark.parametrize("category,text", [(c, t) for c, t in presence_eval.VALUE_LADEN[:4]])
def test_value_laden_sentence_scores_higher_than_neutral(detector, category, text):
    p = detector.probs([text, NEUTRAL])
    j = VALUE_INDEX[category]
    assert p[0, j] > p[1, j], f"{category}: {p[0, j]:.3f} (value-laden) <= {p[1, j]:.3f} (neutral)"


def test_prediction_invariant_to_batch_company(detector):
    texts = ["We should protect nature.", NEUTRAL, "Freedom to choose my own goals matters to me most of all, always."]
    alone = np.vstack([detector.probs([t]) for t in texts])
    assert np.allclose(alone, detector.probs(texts), atol=1e-4)


def test_the_presence_rules_consumers_agree(small_annotators, detector, tmp_path):
    """CLI predict, datasets (targets and rejected filter), the ESConv analysis, the RG value-hit rate and the
    presence figures all count the same values for the same texts."""
    from tasks import datasets as ds
    from tasks import esconv_analysis
    from tasks.train import train_rg_dpo

    folder = small_annotators["value_detector"]
    texts = [*ACCEPTANCE_PROBES, *(t for _, t in presence_eval.VALUE_LADEN), NEUTRAL, "I miss my family so much.",
             "ok", "We need fair rules for everyone and I want to be free to decide."]
    probs = detector.probs(texts)
    reference = detector.present(texts)
    assert _predict_cli(folder, texts, tmp_path) == reference
    assert [ds.present_values(t, p, detector.rule) for t, p in zip(texts, probs, strict=True)] == reference
    ranked = [ds.target_values(t, p, detector.rule, [0.1] * 20) for t, p in zip(texts, probs, strict=True)]
    assert all(set(x) <= set(r) and len(x) == min(3, len(r)) for x, r in zip(ranked, reference, strict=True))
    esconv_mask = esconv_analysis.presence_of(detector)(texts)
    assert [[VALUE_CATEGORIES[j] for j in np.flatnonzero(row)] for row in esconv_mask] == reference
    cfg = SimpleNamespace(train=SimpleNamespace(rg_eval=SimpleNamespace(value_detector=str(folder))))
    rg_detect, why = train_rg_dpo._detector(cfg)
    assert why == "" and rg_detect is not None and rg_detect(texts) == reference
    assert (detector.mask(texts) == np.array([[c in r for c in VALUE_CATEGORIES] for r in reference])).all()


def test_positivity_orders_happy_above_sad(emotion_model):
    model, groups = emotion_model
    probs = model.predict_proba(["Thank you so much, I love this, it made my day!", "I am so sad and angry, this is awful."])
    pos, neg = A.positivity_scores(probs, groups)
    assert pos[0] > 0.5 > pos[1]
    assert neg[1] > neg[0]


def test_the_gates_fail_a_broken_detector(small_annotators, detector):
    """A detector whose cuts fire on everything (or one scoring below the held-back floor) fails its stage."""
    from tasks.annotators import stage
    from tasks.annotators.train_value_detector import presence_extension
    from tasks.common.config import load_profile

    cfg = load_profile("tiny").value_detector
    broken = ValueDetector(detector.model, PresenceRule.uniform(0.0, detector.rule.min_chars))
    figures = presence_eval.presence_report(broken)
    failed = presence_extension(cfg).gates({"presence": figures})
    assert failed and "max_probe_value_share" in failed[0]
    mute = ValueDetector(detector.model, PresenceRule.uniform(1.01, detector.rule.min_chars))  # "no value" everywhere
    failed = presence_extension(cfg).gates({"presence": presence_eval.presence_report(mute)})
    assert failed and "min_value_laden_kept" in failed[0]
    assert presence_extension(cfg).gates({"presence": presence_eval.presence_report(detector)}) == []
    assert stage.score_gate("value_detector", cfg, {"f1": 0.1}) and not stage.score_gate("value_detector", cfg,
                                                                                       {"f1": 0.5})
