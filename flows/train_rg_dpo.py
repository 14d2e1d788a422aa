"""Flow of stage `train_rg_dpo` (the work: tasks/train/train_rg_dpo.py)."""

from __future__ import annotations

from prefect import flow

from tasks.train.common import run_stage
from tasks.train.train_rg_dpo import run_rg_dpo


@flow(name="train_rg_dpo", log_prints=False)
def train_rg_dpo_flow(params_file: str = "params.yaml") -> dict:
    return run_stage("train_rg_dpo", params_file, run_rg_dpo, ("rg_dpo", "rg_eval"))
