"""Behaviour of the trained annotators (directional checks). Skips, with the fix, when the models are not trained."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.annotators import classifier as A
from tasks.common import paths
from tasks.domain.taxonomy import VALUE_INDEX

VALUE_DIR = paths.MODELS / "value_detector"
EMOTION_DIR = paths.MODELS / "emotion"


@pytest.fixture(scope="module")
def value_model():
    if not (VALUE_DIR / "thresholds.json").is_file():
        pytest.skip(f"{VALUE_DIR} not trained: run `dvc repro train_value_detector`")
    return A.MeanPoolClassifier.load(VALUE_DIR)[0]


@pytest.fixture(scope="module")
def emotion_model():
    if not (EMOTION_DIR / "sentiment_dict.json").is_file():
        pytest.skip(f"{EMOTION_DIR} not trained: run `dvc repro train_emotion`")
    model = A.MeanPoolClassifier.load(EMOTION_DIR)[0]
    return model, A.sentiment_groups(EMOTION_DIR / "sentiment_dict.json", model.label_names)


NEUTRAL = "The meeting is on Tuesday at the usual room."


@pytest.mark.parametrize("category,text", [
    ("Universalism: nature", "We must protect the forests, the oceans and the animals from pollution."),
    ("Security: personal", "I need a stable job and good health so my life feels safe and comfortable."),
    ("Benevolence: caring", "I always try to help my friends and family and be honest and loving to them."),
    ("Achievement", "I worked hard to succeed and I am ambitious about becoming really capable at my job."),
])
def test_value_laden_sentence_scores_higher_than_neutral(value_model, category, text):
    p = value_model.predict_proba([text, NEUTRAL])
    j = VALUE_INDEX[category]
    assert p[0, j] > p[1, j], f"{category}: {p[0, j]:.3f} (value-laden) <= {p[1, j]:.3f} (neutral)"


def test_prediction_invariant_to_batch_company(value_model):
    texts = ["We should protect nature.", NEUTRAL, "Freedom to choose my own goals matters to me most of all, always."]
    alone = np.vstack([value_model.predict_proba([t]) for t in texts])
    assert np.allclose(alone, value_model.predict_proba(texts), atol=1e-4)


def test_positivity_orders_happy_above_sad(emotion_model):
    model, groups = emotion_model
    probs = model.predict_proba(["Thank you so much, I love this, it made my day!", "I am so sad and angry, this is awful."])
    pos, neg = A.positivity_scores(probs, groups)
    assert pos[0] > 0.5 > pos[1]
    assert neg[1] > neg[0]
