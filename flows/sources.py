"""Flow of stage `sources`: stage the public datasets into data/external/ (DVC tracks the folder)."""

from __future__ import annotations

import logging

from prefect import flow

from tasks import sources
from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run

log = logging.getLogger(__name__)


@flow(name="sources", log_prints=False)
def sources_flow(params_file: str = "params.yaml") -> dict:
    cfg = stage_params("sources", paths.ROOT / params_file)
    log.info("sources: %s", cfg.sources.model_dump())
    with stage_run("sources", cfg.profile, cfg.tracking.experiment, params=cfg.sources.model_dump()) as _:
        import mlflow

        report = sources.run(cfg.sources.datasets, allow_download=cfg.sources.allow_download)
        mlflow.log_metrics({f"sources.{k}": v for k, v in report.items()})
        write_json(paths.METRICS / "sources.json", report)
    return report
