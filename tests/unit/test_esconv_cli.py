"""`esvr analyze esconv` on hand-made ESConv-format conversations (no dataset text in the repo)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.annotators import classifier as A
from tasks.domain.taxonomy import VALUE_CATEGORIES


def _conv(ini, fin, turns):
    dialog = [x for t in turns for x in ({"speaker": "usr", "text": t}, {"speaker": "sys", "text": "I see.", "strategy": "Question"})]
    return {"emotion_type": "anxiety", "problem_type": "job crisis", "situation": "x",
            "survey_score": {"seeker": {"initial_emotion_intensity": str(ini), "final_emotion_intensity": fin}}, "dialog": dialog}


def test_analyze_esconv_cli_prints_the_contract_keys(tmp_path):
    from typer.testing import CliRunner

    from tasks.cli.main import app

    model = A.MeanPoolClassifier.from_base("minilm", list(VALUE_CATEGORIES), 32)
    model.save(tmp_path / "vd", np.full(20, 0.0))  # threshold 0: every category counts, so counts = turns x 11
    data = tmp_path / "esconv"
    data.mkdir()
    convs = [_conv(5, "1", ["I feel better now", "thanks", "I will try it"]), _conv(5, "2", ["ok"]),
             _conv(5, "4", ["no", "still bad"]), _conv(5, "", ["x"]), _conv(3, "1", ["y"]), _conv(5, "3", ["z"])]
    for i, name in enumerate(("train.json", "valid.json", "test.json")):
        (data / name).write_text("\n".join(json.dumps(c) for c in convs[2 * i: 2 * i + 2]) + "\n")
    r = CliRunner().invoke(app, ["analyze", "esconv", "--data", str(data), "--model", str(tmp_path / "vd")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["high_effect"]["n"] == 2 and out["low_effect"]["n"] == 2 and out["no_final"] == 1
    # "ok" is under the presence rule's min_chars (3): no value, whatever the detector says
    assert out["high_effect"]["mean_positive_values_last4"] == pytest.approx(11 * (3 + 0) / 2)
    assert out["low_effect"]["mean_positive_values_last4"] == pytest.approx(11 * (1 + 0) / 2)  # "no", "z" too short
    assert 0 <= out["p_value"] <= 1
