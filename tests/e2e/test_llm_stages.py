"""Stages `personas` (`esvr personas`) then `simulate` (`esvr stage`: real Prefect) with MLflow, in a project copy,
every role pointed at a loopback OpenAI-compatible server (the paper profile's shape: remote endpoints)."""

from __future__ import annotations

import json

import pytest
import yaml

from tasks.common.config import resolve_profile
from tasks.common.io import read_jsonl
from tests.conftest import run_cli
from tests.fakes.mock_llm import MockServer


@pytest.mark.slow
def test_personas_and_simulate_stages(project_copy, mirror):
    ext = project_copy / "data" / "external"
    (ext / "esconv").mkdir(parents=True)
    (ext / "seeker_personas").mkdir()
    (ext / "esconv" / "train.json").symlink_to(mirror / "esconv" / "train.json")
    (ext / "seeker_personas" / "card_high_en.json").symlink_to(mirror / "seeker-personas" / "card_high_en.json")
    with MockServer(fault_rate=0.1, timeout_sleep_s=2.0) as m:
        data, _ = resolve_profile("tiny")
        data["llm"]["local_models"] = {}
        for role in data["llm"]["roles"].values():
            role.update(base_url=m.url, model="mock", api_key_env="ESVR_TEST_KEY", price_prompt_per_mtok=1.0,
                        price_completion_per_mtok=2.0)
        data["llm"].update(timeout_s=1.0, max_retries=6)
        data["personas"].update(count=5, dedup_threshold=0.999)
        (project_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        env = {"ESVR_TEST_KEY": "sk-test-not-a-secret"}
        # personas through its standalone command, simulate through its Prefect flow (what `dvc repro` runs)
        for cmd in (["esvr", "personas"], ["esvr", "stage", "simulate"]):
            r = run_cli(cmd, project_copy, env)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        hits = m.state.hits
    sim = json.loads((project_copy / "metrics" / "simulate.json").read_text())
    per = json.loads((project_copy / "metrics" / "personas.json").read_text())
    n_train = len(list(read_jsonl(project_copy / "data" / "personas" / "train.jsonl")))
    assert per["personas"] == 5 and n_train == per["train_personas"] >= 3
    assert sim["dialogues"] == n_train and sim["failed"] == 0
    assert 0.0 <= sim["adoption_rate"] <= 1.0 and sim["llm.total.cost_usd"] > 0
    assert per["llm.total.http_attempts"] + sim["llm.total.http_attempts"] == hits
    # the MLflow runs carry the same counters
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project_copy}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["esvr"], filter_string="tags.`esvr.stage` = 'simulate'")
    assert len(runs) == 1 and runs.iloc[0]["metrics.simulate.dialogues"] == n_train
    assert runs.iloc[0]["metrics.simulate.llm.total.completion_tokens"] > 0
    # a second run pays nothing: everything comes from the response cache / progress file
    r = run_cli(["esvr", "simulate", "--out", str(project_copy / "again")], project_copy, env)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((project_copy / "again" / "report.json").read_text())
    assert again["dialogues"] == n_train and again["llm.total.requests"] == 0
