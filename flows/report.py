"""Flow of stage `report`: the evaluation report rebuilt from the MLflow store (data/report/report.html, report.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow

from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.evaluate import report

log = logging.getLogger(__name__)


def run_stage(params_file: str | Path = "params.yaml", out_dir: Path | None = None,
              metrics_file: Path | None = None) -> dict[str, Any]:
    """The stage without Prefect (the flow calls this; `esvr report` calls `report.build` directly)."""
    cfg = stage_params("report", paths.ROOT / params_file)
    out_dir = out_dir or paths.REPORT
    log.info("report: %s -> %s", cfg.report.model_dump(), out_dir)
    with stage_run("report", cfg.profile, cfg.tracking.experiment, params={"report": cfg.report.model_dump()}) as _:
        import mlflow

        summary = report.build(out_dir, cfg.evaluate.experiment, cfg.tracking.experiment, cfg.report.transcripts)
        mlflow.log_artifact(str(out_dir / "report.html"))
        mlflow.log_artifact(str(out_dir / "report.md"))
        mlflow.set_tag("report.batch", summary["batch"])
        numbers = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float))}
        mlflow.log_metrics({f"report.{k}": v for k, v in numbers.items()})
        write_json(metrics_file or paths.METRICS / "report.json", numbers)
    return summary


@flow(name="report", log_prints=False)
def report_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    return run_stage(params_file)
