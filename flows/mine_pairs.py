"""Flow of stage `mine_pairs`: value and emotion rewards of the rollouts and their DPO pairs (data/pairs/)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow

from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.supporter import mine_pairs, plots

log = logging.getLogger(__name__)


def run_stage(params_file: str | Path = "params.yaml", rollouts_dir: Path | None = None, out_dir: Path | None = None,
              metrics_file: Path | None = None) -> dict[str, Any]:
    cfg = stage_params("mine_pairs", paths.ROOT / params_file)
    sup = cfg.supporter
    log.info("mine_pairs: reward %s, pairs %s, h=%d", sup.reward.model_dump(), sup.pairs.model_dump(),
             sup.rollouts.horizon)
    with stage_run("mine_pairs", cfg.profile, cfg.tracking.experiment,
                   params={"supporter.reward": sup.reward.model_dump(), "supporter.pairs": sup.pairs.model_dump(),
                           "supporter.rollouts.horizon": sup.rollouts.horizon}):
        import mlflow

        metrics, raw = mine_pairs.run(rollouts_dir or paths.ROLLOUTS, out_dir or paths.PAIRS,
                                      sup.reward, sup.pairs, sup.rollouts.horizon,
                                      paths.ROOT / cfg.annotate.value_model, cfg.seed)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        mlflow.log_dict({k: v for k, v in metrics.items() if not isinstance(v, int | float)}, "mine_pairs.json")
        for kind in mine_pairs.KINDS:
            plots.log_figure(plots.histogram(raw["reward"][kind], f"{kind} reward per candidate", "R"),
                             f"{kind}_reward.png")
            plots.log_figure(plots.histogram(raw["delta"][kind], f"{kind} reward gap of the pairs", "ΔR"),
                             f"{kind}_delta.png")
        write_json(metrics_file or paths.METRICS / "mine_pairs.json", metrics)
        log.info("mine_pairs: %d value pairs, %d emotion pairs from %d candidates", metrics["value.pairs_unique"],
                 metrics["emotion.pairs_unique"], metrics["candidates"])
    return metrics


@flow(name="mine_pairs", log_prints=False)
def mine_pairs_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    return run_stage(params_file)
