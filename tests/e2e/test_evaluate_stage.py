"""Stages `evaluate` and `report` through `esvr stage` (real Prefect, MLflow, the flow shells) in a project copy,
every LLM role and endpoint on the loopback server: teacher variants, the planner, a supporter model variant that
answers off-format (counted as malformed), supporters whose model is not registered (skipped with the reason),
the human row; then `esvr report --out`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tasks.common.config import resolve_profile
from tasks.common.io import write_jsonl
from tasks.domain.taxonomy import VALUE_CATEGORIES
from tests.conftest import run_cli
from tests.fakes.mock_llm import MockServer

MOCK_ROLE = {"model": "mock", "api_key_env": None, "price_prompt_per_mtok": 0.0, "price_completion_per_mtok": 0.0}


@pytest.mark.slow
def test_evaluate_and_report_stages(project_copy, mirror):
    from tasks.annotators.classifier import MeanPoolClassifier

    ext = project_copy / "data" / "external" / "esconv"
    ext.parent.mkdir(parents=True)
    ext.symlink_to(mirror / "esconv")
    write_jsonl(project_copy / "data" / "personas" / "eval.jsonl", [
        {"id": f"eval-{i}", "problem_type": "job crisis", "emotion_type": "anxiety", "initial_intensity": 4,
         "context": f"You are person {i}.", "source": "test"} for i in range(2)])
    MeanPoolClassifier.from_base("minilm", list(VALUE_CATEGORIES), 64).save(
        project_copy / "models" / "value_detector", np.full(20, 0.5))
    (project_copy / "models" / "fake_supporter").mkdir()
    (project_copy / "models" / "fake_supporter" / "config.json").write_text("{}")
    with MockServer() as m:
        data, _ = resolve_profile("tiny")
        data["llm"]["local_models"] = {}
        for role in data["llm"]["roles"].values():
            role.update(base_url=m.url, **MOCK_ROLE)
        for ep in data["evaluate"]["endpoints"].values():
            ep.update(base_url=m.url, **MOCK_ROLE)
        ev = data["evaluate"]
        ev.update(turns=1, human={"split": "test", "limit": 1, "judge": True})
        ev["planner"]["limit_train"] = 100
        ev["bootstrap"]["n"] = 200
        ev["variants"]["supporter-sft"]["model"] = "models/fake_supporter"  # a folder: available
        (project_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        # the report stage's flow runs in the DAG test (tests/e2e/test_pipeline.py); here its contract command
        # and the stage's own dialogue files are valid input of the contract command, judged this time
        scored = project_copy / "scored.json"
        for cmd in (["esvr", "stage", "evaluate"], ["esvr", "report", "--out", str(project_copy / "report")],
                    ["esvr", "evaluate", "dialogues", "--input", "data/evaluation/teacher-both.jsonl", "--out",
                     str(scored), "--judge"]):
            r = run_cli(cmd, project_copy)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    summary = json.loads((project_copy / "metrics" / "evaluate.json").read_text())
    assert set(summary["skipped"]) == {"supporter-dpo", "emotion-dpo"}
    assert "not available" in summary["skipped"]["supporter-dpo"]
    ran = {"teacher", "teacher-values", "teacher-reference", "teacher-both", "ppdpp", "supporter-sft", "human-esconv"}
    assert set(summary["run_ids"]) == ran
    assert summary["counters"]["supporter-sft"]["dialogues"] == 2
    sft = json.loads((project_copy / "data" / "evaluation" / "summary.json").read_text())["estimates"]
    assert sft["supporter-sft"]["seeker_value"]["n"] == 2
    rows = [json.loads(x) for x in (project_copy / "data" / "evaluation" / "supporter-sft.jsonl").open()]
    turn = rows[0]["turns"][1]
    assert turn["malformed"] is True and turn["answer"] == turn["text"]  # off-format answers: shown as written
    assert rows[0]["scores"]["malformed_share"] == 1.0
    html = (project_copy / "report" / "report.html").read_text()
    assert 'id="ablation-table"' in html and 'id="main-table"' in html and "supporter-dpo" in html
    assert (project_copy / "report" / "report.md").is_file()
    judged = json.loads(scored.read_text())
    assert len(judged["dialogues"]) == 2 and 1 <= judged["means"]["overall"] <= 5
    assert all(1 <= d["suggestion"] <= 5 and d["judge"]["overall"]["rationale"] for d in judged["dialogues"])
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project_copy}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["esvr-eval"], output_format="list")
    assert len(runs) == 7 and all(r.data.tags["esvr.eval_batch"] == summary["batch"] for r in runs)
    stage = mlflow.search_runs(experiment_names=["esvr"], filter_string="tags.`esvr.stage` = 'evaluate'",
                               output_format="list")
    assert len(stage) == 1 and stage[0].info.run_id == summary["batch"]
    assert "evaluate.skipped.emotion-dpo" in stage[0].data.tags
