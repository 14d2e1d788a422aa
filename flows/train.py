"""Flows of stages `train_tvd`, `train_rg_sft`, `train_rg_dpo` (tasks/train.py does the work)."""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow

from tasks import paths, train
from tasks.io import write_json
from tasks.orchestration import stage_params
from tasks.tracking import stage_run
from tasks.trainers import bounded_params

log = logging.getLogger(__name__)


def _stage(stage: str, params_file: str, run_fn: Any, groups: tuple[str, ...]) -> dict:
    cfg = stage_params(stage, paths.ROOT / params_file)
    t = cfg.train
    # A bounded param set: the stage's own groups, not the ~170 TrainingArguments fields.
    params = bounded_params("", seed=cfg.seed, dtype=cfg.base_model.dtype, trainer=t.trainer, lora=t.lora,
                            **{g: getattr(t, g) for g in groups})
    log.info("%s: %s", stage, params)
    with stage_run(stage, cfg.profile, cfg.tracking.experiment, params=params):
        metrics = run_fn(cfg)
        write_json(paths.METRICS / f"{stage}.json", metrics)
    return metrics


@flow(name="train_tvd", log_prints=False)
def train_tvd_flow(params_file: str = "params.yaml") -> dict:
    return _stage("train_tvd", params_file, train.run_tvd, ("tvd", "tvd_eval"))


@flow(name="train_rg_sft", log_prints=False)
def train_rg_sft_flow(params_file: str = "params.yaml") -> dict:
    return _stage("train_rg_sft", params_file, train.run_rg_sft, ("rg_sft",))


@flow(name="train_rg_dpo", log_prints=False)
def train_rg_dpo_flow(params_file: str = "params.yaml") -> dict:
    return _stage("train_rg_dpo", params_file, train.run_rg_dpo, ("rg_dpo", "rg_eval"))
