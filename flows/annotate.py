"""Flow of stage `annotate`: both annotators over every utterance of data/threads/shards (one cached task per shard)."""

from __future__ import annotations

import logging

from prefect import flow

from tasks import annotate
from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import runner_params, stage_params
from tasks.common.tracking import stage_run

log = logging.getLogger(__name__)


@flow(name="annotate", log_prints=False)
def annotate_flow(params_file: str = "params.yaml") -> dict:
    cfg_all = stage_params("annotate", paths.ROOT / params_file)
    cfg = cfg_all.annotate
    log.info("annotate: %s", cfg.model_dump())
    with stage_run("annotate", cfg_all.profile, cfg_all.tracking.experiment, params={"annotate": cfg.model_dump()}):
        import mlflow

        summary = annotate.annotate_all(cfg, runner=runner_params(paths.ROOT / params_file))
        rate = summary["utterances"] / summary["seconds"] if summary["seconds"] > 0 else 0.0
        metrics = {k: v for k, v in summary.items() if isinstance(v, int | float)}
        metrics["utterances_per_second"] = rate
        mlflow.log_metrics({f"annotate.{k}": float(v) for k, v in metrics.items()})
        mlflow.set_tags({f"annotate.model_version.{k}": v for k, v in summary["model_versions"].items()})
        # The metrics file holds what the data is (equal on every run of equal inputs); timings and how many shards
        # came from the cache describe one run and stay in MLflow.
        run_specific = {"seconds", "wall_seconds", "utterances_per_second", "cached", "annotated"}
        write_json(paths.METRICS / "annotate.json", {**{k: v for k, v in metrics.items() if k not in run_specific},
                                                     "model_versions": summary["model_versions"]})
    return summary
