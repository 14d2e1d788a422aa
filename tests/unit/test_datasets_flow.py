"""The `datasets` flow for real: Prefect API, MLflow sqlite store, per-shard cache, metrics and MLflow inputs."""

from __future__ import annotations

import pytest
import yaml

from tasks import datasets as ds
from tasks.common import paths
from tasks.common.io import read_json, write_json
from tests.dataset_builders import write_store
from tests.params import datasets_cfg


@pytest.fixture
def store(tmp_path, monkeypatch):
    threads_dir, ann_dir = write_store(tmp_path / "data", n_threads=9)
    monkeypatch.setattr(ds, "THREADS_DIR", threads_dir)
    monkeypatch.setattr(ds, "ANNOTATED_DIR", ann_dir)
    monkeypatch.setattr(ds, "OUT_DIR", tmp_path / "data" / "datasets")
    monkeypatch.setattr(paths, "METRICS", tmp_path / "metrics")
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp_path / "results"))
    return tmp_path


def test_flow_writes_metrics_and_logs_mlflow_dataset_inputs(prefect_api, mlflow_store, store):
    import mlflow

    from flows.datasets import datasets_flow

    # The tiny profile reads the value detector's thresholds.json: give the flow one of its own.
    params = yaml.safe_load((paths.ROOT / "params.yaml").read_text())
    det = {"labels": list(ds.VALUE_CATEGORIES), "thresholds": [0.3] * 20}
    write_json(store / "thresholds.json", det)
    params["datasets"].update(value_threshold="detector", value_thresholds_file=str(store / "thresholds.json"))
    (store / "params.yaml").write_text(yaml.safe_dump(params))
    out = datasets_flow(params_file=str(store / "params.yaml"))
    assert out["sizes"]["tvd"]["train"] > 0
    metrics = read_json(store / "metrics" / "datasets.json")
    assert metrics["extraction"]["op_replies_positive"] == 18
    assert set(metrics["tvd"]["label_distribution"]) == set(ds.VALUE_CATEGORIES)
    run = mlflow.search_runs(experiment_names=["esvr"], output_format="list", max_results=1)[0]
    assert run.info.status == "FINISHED"
    names = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert {"tvd-train", "rg_sft-validation", "rg_pairs-test"} <= names
    assert run.data.metrics["datasets.tvd.total"] == 18
    assert read_json(ds.OUT_DIR / "stats.json")["value_thresholds"] == [0.3] * 20


def test_extract_shard_task_is_cached_across_calls_and_keyed_on_content(prefect_api, store):
    from prefect import flow

    cfg = datasets_cfg()
    shard = sorted((ds.THREADS_DIR / "shards").glob("*.jsonl"))[0]
    ann = ds.ANNOTATED_DIR / "shards" / shard.name
    task = ds._extract_task()

    @flow
    def twice(ann_sha: str):
        args = (str(shard), ds._file_digest(shard), str(ann))
        rest = (cfg.model_dump(), 3, None, None, "v")
        a = task(*args, ann_sha, *rest, return_state=True)
        b = task(*args, ann_sha, *rest, return_state=True)
        return a.name, b.name

    assert twice(ds._file_digest(ann)) == ("Completed", "Cached")
    assert twice("changed-annotations")[0] == "Completed"
