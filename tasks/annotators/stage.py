"""The shell both annotator stages run (`train_value_detector`, `train_emotion`): train inside the stage's MLflow
run, log curves, per-category metrics and the model folder, register it with alias `champion`."""

from __future__ import annotations

import logging
from pathlib import Path

from tasks.annotators import classifier
from tasks.common import paths, registry
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run

log = logging.getLogger(__name__)


def train_and_log(task: str, params_file: str, out_dir: Path | None = None) -> dict:
    """Train one annotator inside its MLflow stage run: params, per-epoch curves, per-category metrics, artifacts."""
    stage, folder, reg_name, _ = classifier.TASKS[task]
    cfg_all = stage_params(stage, paths.ROOT / params_file)
    cfg = getattr(cfg_all, task)
    out = out_dir or paths.MODELS / folder
    with stage_run(stage, cfg_all.profile, cfg_all.tracking.experiment, params={task: cfg.model_dump(), "seed": cfg_all.seed}) as run:
        import mlflow

        def on_metrics(m: dict[str, float], step: int) -> None:
            mlflow.log_metrics({k: float(v) for k, v in m.items()}, step=step)

        res, summary = classifier.run_train(task, cfg, cfg_all.seed, out, on_metrics=on_metrics)
        mlflow.log_metrics({f"final.{k}": float(v) for k, v in summary.items()})
        for name, m in res.eval["per_category"].items():
            key = "".join(c if c.isalnum() else "_" for c in name).strip("_")
            mlflow.log_metrics({f"cat.{key}.f1": m["f1"], f"cat.{key}.precision": m["precision"],
                                f"cat.{key}.recall": m["recall"]})
        mlflow.log_dict({"history": res.history, "eval": res.eval}, "eval/dev_eval.json")
        mlflow.log_artifacts(str(out), artifact_path="model")
        version = None
        if cfg.register_champion:
            version = registry.register_logged(f"{run.info.artifact_uri}/model", reg_name, run.info.run_id, ["champion"],
                                               description=f"esvr annotator (stage {stage})")
        report = {**summary, "registered_version": version, "per_category_f1": {k: v["f1"] for k, v in res.eval["per_category"].items()}}
        write_json(paths.METRICS / f"{stage}.json", report)
    log.info("%s done: %s", stage, summary)
    return report
