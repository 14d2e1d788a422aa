"""The human-supporter reference row: real ESConv test conversations from the mirror, scored by `esvr evaluate
dialogues` (the contract command) with a real value detector — the trained one when the DAG has built it, else an
untrained MiniLM classifier with the presence rule's files (the contract and the survey intensities are the point
here; the detector's quality is tested with the annotators)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.common import paths
from tasks.common.io import write_jsonl
from tasks.domain.taxonomy import VALUE_CATEGORIES
from tasks.evaluate import human
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> str:
    trained = paths.VALUE_DETECTOR
    if (trained / "annotator.json").is_file():
        return str(trained)
    from tasks.annotators.classifier import MeanPoolClassifier

    folder = tmp_path_factory.mktemp("value_detector")
    MeanPoolClassifier.from_base("minilm", list(VALUE_CATEGORIES), 64).save(folder, np.full(20, 0.5))
    return str(folder)


@pytest.mark.slow  # MiniLM load + a CLI process that loads it again: ~40 s on the loaded 2-core box
def test_esconv_human_row_through_the_contract_command(mirror, tmp_path, detector_dir):
    convs = human.read_split(mirror / "esconv", "test")[:4]
    dialogues = human.human_dialogues(mirror / "esconv", "test", 4)
    assert len(dialogues) == 4
    write_jsonl(tmp_path / "esconv.jsonl", dialogues)
    res = run_cli(["esvr", "evaluate", "dialogues", "--input", str(tmp_path / "esconv.jsonl"), "--out",
                   str(tmp_path / "scored.json"), "--value-detector", detector_dir], paths.ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = json.loads((tmp_path / "scored.json").read_text())
    assert [d["id"] for d in out["dialogues"]] == [d["id"] for d in dialogues]
    for row, conv in zip(out["dialogues"], convs, strict=True):
        assert 0.0 <= row["seeker_value"] <= 1.0 and 0.0 <= row["supporter_value"] <= 1.0
        final = conv["survey_score"]["seeker"].get("final_emotion_intensity")
        assert row["final_intensity"] == (int(final) if final else None)  # the survey's final score
        assert row["initial_intensity"] == int(conv["survey_score"]["seeker"]["initial_emotion_intensity"])
        assert sum(row["strategies"].values()) == row["n_supporter_turns"]  # every human turn has its label
        assert "suggestion" not in row  # no judge unless --judge
    m = out["means"]
    assert m["dialogues"] == 4 and 0 <= m["seeker_value"] <= 1 and 0 <= m["supporter_value"] <= 1
    assert m["intensity"] == m["final_intensity"] and 1 <= m["final_intensity"] <= 5


def test_a_bad_dialogue_file_names_line_and_key(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "turns": [{"role": "seeker", "text": "hi", "intensity": 3}]}\n'
                   '{"id": "b", "turns": [{"role": "therapist", "text": "hi", "intensity": null}]}\n')
    res = run_cli(["esvr", "evaluate", "dialogues", "--input", str(bad), "--out", str(tmp_path / "o.json")],
                  paths.ROOT, timeout=120)
    assert res.returncode == 2 and f"{bad}:2" in res.stderr and "turns[0].role" in res.stderr
    assert not (tmp_path / "o.json").exists()
