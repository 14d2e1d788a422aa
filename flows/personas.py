"""Flow of stage `personas`: seeker personas from ESConv situations and ESC-Eval role cards (data/personas/)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow

from tasks import personas
from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.llm.client import BudgetExceeded, open_llm

log = logging.getLogger(__name__)


def run_stage(params_file: str | Path = "params.yaml", out_dir: Path | None = None,
              metrics_file: Path | None = None) -> dict[str, Any]:
    """The stage without Prefect (the flow and `esvr personas` call this)."""
    cfg = stage_params("personas", paths.ROOT / params_file)
    out_dir = out_dir or paths.PERSONAS
    log.info("personas: %s", cfg.personas.model_dump())
    group = {"personas": cfg.personas.model_dump(), "llm": cfg.llm.model_dump()}
    with stage_run("personas", cfg.profile, cfg.tracking.experiment, params=group) as _:
        import mlflow

        with open_llm(cfg.llm, ["persona_writer"], paths.ROOT, log_dir=paths.ROOT / cfg.llm.cache_dir) as llm:
            report = personas.run(llm, cfg.personas, cfg.seed, paths.EXTERNAL, out_dir)
            report.update(llm.ledger.metrics())
        mlflow.log_metrics({f"personas.{k}": float(v) for k, v in report.items()})
        write_json(metrics_file or paths.METRICS / "personas.json", report)
        if report["stopped_by_budget"]:
            raise BudgetExceeded(f"personas: llm.budget_usd {cfg.llm.budget_usd} reached after {report['personas']} "
                                 "personas (saved); raise it and re-run — paid answers come from the cache")
    return report


@flow(name="personas", log_prints=False)
def personas_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    return run_stage(params_file)
