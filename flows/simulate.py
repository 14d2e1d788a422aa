"""Flow of stage `simulate`: seeker x supporter-teacher dialogues over the train personas (data/simulated/)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow

from tasks import simulate
from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.llm.client import BudgetExceeded, open_llm

log = logging.getLogger(__name__)


def run_stage(params_file: str | Path = "params.yaml", personas: int | None = None, out_dir: Path | None = None,
              persona_file: Path | None = None, metrics_file: Path | None = None) -> dict[str, Any]:
    """The stage without Prefect (the flow and `esvr simulate` call this); `personas` overrides the params count."""
    cfg = stage_params("simulate", paths.ROOT / params_file)
    sim_cfg = cfg.simulate.model_dump()
    if personas:
        sim_cfg["personas"] = personas
    out_dir = out_dir or paths.SIMULATED
    persona_file = persona_file or paths.PERSONAS / "train.jsonl"
    log.info("simulate: %s (personas from %s)", sim_cfg, persona_file)
    with stage_run("simulate", cfg.profile, cfg.tracking.experiment,
                   params={"simulate": sim_cfg, "llm": cfg.llm.model_dump()}) as _:
        import mlflow

        cache = paths.ROOT / cfg.llm.cache_dir
        with open_llm(cfg.llm, simulate.ROLES, paths.ROOT, log_dir=cache, served=cfg.serving.adapters) as llm:
            report = simulate.run(llm, persona_file, out_dir, sim_cfg, cfg.seed, cache / "progress",
                                  cfg.llm.max_concurrency)
            report.update(llm.ledger.metrics())
        progress_file = report.pop("progress_file")
        mlflow.log_metrics({f"simulate.{k}": float(v) for k, v in report.items()})
        mlflow.set_tag("simulate.progress_file", progress_file)
        write_json(metrics_file or paths.METRICS / "simulate.json", report)
        if report["stopped_by_budget"]:
            raise BudgetExceeded(f"simulate: llm.budget_usd {cfg.llm.budget_usd} reached after {report['dialogues']} "
                                 "dialogues (saved); raise it and re-run — finished dialogues are not redone")
        if report["failed_fraction"] > cfg.simulate.max_failed_fraction:
            raise RuntimeError(f"simulate: {report['failed']} of {report['personas']} dialogues failed "
                               f"(> simulate.max_failed_fraction {cfg.simulate.max_failed_fraction}); see the log")
    return report


@flow(name="simulate", log_prints=False)
def simulate_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    return run_stage(params_file)
