"""The supporter's five stages through `esvr stage` (Prefect flow + MLflow run + metrics file) in a clean project
copy: SFT on simulated dialogues, rollouts (the SFT supporter served locally by the stage, the seeker/TVD/RG on a
loopback server), pair mining, DPO and Emotion-DPO; registry aliases sft, dpo, emotion-dpo, champion."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tasks.common.config import _deep_merge, resolve_profile
from tasks.common.io import read_jsonl
from tests.conftest import run_cli
from tests.fakes.mock_llm import MockServer
from tests.supporter_data import MICRO, build_annotators, build_tiny_base, write_simulated

STAGES = ("train_supporter_sft", "rollouts", "mine_pairs", "train_supporter_dpo", "train_supporter_emotion_dpo")


@pytest.mark.slow
def test_supporter_stages_end_to_end(project_copy, mirror):
    root = project_copy
    build_tiny_base(root / "models", max_positions=1024)
    build_annotators(root / "models", mirror)
    (root / "models" / "values").rename(root / "models" / "value_detector")
    write_simulated(root / "data", n_train=6, n_val=1, n_turns=2)
    with MockServer(seeded=True) as m:
        data, _ = resolve_profile("tiny")
        data = _deep_merge(data, MICRO)
        data["llm"]["local_models"] = {}
        for role in data["llm"]["roles"].values():
            role.update(base_url=m.url, model="mock")
        data["supporter"]["rollouts"].update(max_states=4, shard_size=2)
        data["supporter"]["rollouts"]["supporter"].update(max_tokens=40)  # the real SFT model, served by the stage
        data["supporter"]["pairs"].update(t_diff=0.0, emotion_t_diff=0.0, validation_fraction=0.25)
        data["annotate"].update(value_model="models/value_detector", emotion_model="models/emotion", max_length=32)
        (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        for stage in STAGES:
            r = run_cli(["esvr", "stage", stage], cwd=root, timeout=900)
            assert r.returncode == 0, f"{stage} failed:\n{r.stderr[-4000:]}"
            assert (root / "metrics" / f"{stage}.json").is_file()
    metrics = {s: json.loads((root / "metrics" / f"{s}.json").read_text()) for s in STAGES}
    sft, roll, pairs = metrics["train_supporter_sft"], metrics["rollouts"], metrics["mine_pairs"]
    assert sft["targets.adoption_rate"] == 0.5 and "student.adoption_rate" in sft
    assert roll["states_done"] == 4 and roll["failed"] == 0 and roll["llm.supporter.requests"] > 0
    assert roll["continuations"] == roll["candidates_unique"] * 2
    assert pairs["value.pairs_unique"] > 0 and pairs["emotion.pairs_unique"] > 0
    assert {"value.reward.mean", "emotion.reward.mean", "value.delta_hist"} <= set(pairs)
    for stage, alias in (("train_supporter_dpo", "dpo"), ("train_supporter_emotion_dpo", "emotion-dpo")):
        assert metrics[stage]["reference.is_sft"] == 1 and metrics[stage]["reference.max_abs_diff"] <= 1e-3
        assert f"{alias}.student.adoption_rate" in metrics[stage]
    rows = list(read_jsonl(root / "data" / "rollouts" / "candidates.jsonl"))
    assert {"value_probs", "positivity", "emotion_intensity"} <= set(rows[0]["continuations"][0][0])
    # registry and plots
    r = run_cli(["python", "-c", (
        "import json; from tasks.common import tracking; from mlflow import MlflowClient; tracking.setup(); "
        "c = MlflowClient(); m = c.get_registered_model('supporter'); "
        "runs = {r.data.tags['esvr.stage']: r.info.run_id for r in c.search_runs([e.experiment_id for e in "
        "c.search_experiments()])}; "
        "arts = {s: sorted(a.path for a in c.list_artifacts(runs[s], 'plots')) for s in "
        "('train_supporter_sft', 'mine_pairs', 'train_supporter_dpo')}; "
        "print(json.dumps({'aliases': sorted(m.aliases), 'plots': arts}))")], cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"sft", "dpo", "emotion-dpo", "champion"} <= set(out["aliases"])
    assert "plots/value_delta.png" in out["plots"]["mine_pairs"] and out["plots"]["train_supporter_sft"]
    shutil.rmtree(root / "checkpoints", ignore_errors=True)
