"""Flows of stages `train_value_detector` and `train_emotion`: train an annotator, log it to MLflow, register it."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow

from tasks import annotators, paths
from tasks.io import write_json
from tasks.orchestration import stage_params
from tasks.tracking import stage_run

log = logging.getLogger(__name__)


def train_and_log(task: str, params_file: str, out_dir: Path | None = None) -> dict:
    """Train one annotator inside its MLflow stage run: params, per-epoch curves, per-category metrics, artifacts."""
    stage, folder, reg_name, _ = annotators.TASKS[task]
    cfg_all = stage_params(stage, paths.ROOT / params_file)
    cfg = getattr(cfg_all, task)
    if cfg is None:
        raise ValueError(f"{params_file}: params group {task!r} missing; copy it from profiles/tiny.yaml")
    out = out_dir or paths.MODELS / folder
    with stage_run(stage, cfg_all.profile, cfg_all.tracking.experiment, params={task: cfg.model_dump(), "seed": cfg_all.seed}) as run:
        import mlflow

        def on_metrics(m: dict[str, float], step: int) -> None:
            mlflow.log_metrics({k: float(v) for k, v in m.items()}, step=step)

        res, summary = annotators.run_train(task, cfg, cfg_all.seed, out, on_metrics=on_metrics)
        mlflow.log_metrics({f"final.{k}": float(v) for k, v in summary.items()})
        for name, m in res.eval["per_category"].items():
            key = "".join(c if c.isalnum() else "_" for c in name).strip("_")
            mlflow.log_metrics({f"cat.{key}.f1": m["f1"], f"cat.{key}.precision": m["precision"],
                                f"cat.{key}.recall": m["recall"]})
        mlflow.log_dict({"history": res.history, "eval": res.eval}, "eval/dev_eval.json")
        mlflow.log_artifacts(str(out), artifact_path="model")
        version = None
        if cfg.register_champion:
            version = annotators.register_model(f"{run.info.artifact_uri}/model", reg_name, run.info.run_id)
        report = {**summary, "registered_version": version, "per_category_f1": {k: v["f1"] for k, v in res.eval["per_category"].items()}}
        write_json(paths.METRICS / f"{stage}.json", report)
    log.info("%s done: %s", stage, summary)
    return report


@flow(name="train_value_detector", log_prints=False)
def train_value_detector_flow(params_file: str = "params.yaml") -> dict:
    return train_and_log("value_detector", params_file)


@flow(name="train_emotion", log_prints=False)
def train_emotion_flow(params_file: str = "params.yaml") -> dict:
    return train_and_log("emotion", params_file)
