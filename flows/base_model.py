"""Flow of stage `base_model`: tokenizer + chat template (models/tokenizer/) and the base LM (models/base/)."""

from __future__ import annotations

import logging

from prefect import flow

from tasks import base_model
from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.domain import chat_template

log = logging.getLogger(__name__)


@flow(name="base_model", log_prints=False)
def base_model_flow(params_file: str = "params.yaml") -> dict:
    cfg = stage_params("base_model", paths.ROOT / params_file)
    log.info("base_model: %s", cfg.base_model.model_dump())
    params = {"base_model": cfg.base_model}
    with stage_run("base_model", cfg.profile, cfg.tracking.experiment, params=params):
        import mlflow

        report = base_model.run(cfg.base_model, cfg.seed, cfg.train.trainer, cfg.train.run)
        mlflow.log_metrics({f"base_model.{k}": float(v) for k, v in report.items()})
        mlflow.log_artifact(str(paths.TOKENIZER / chat_template.TEMPLATE_FILE), "tokenizer")
        write_json(paths.METRICS / "base_model.json", report)
    return report
