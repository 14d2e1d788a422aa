"""Flow of stage `train_supporter_dpo` (the work: tasks/supporter/train_supporter_dpo.py)."""

from __future__ import annotations

from prefect import flow

from tasks.supporter.train_supporter_dpo import run_supporter_dpo
from tasks.train.common import run_stage


@flow(name="train_supporter_dpo", log_prints=False)
def train_supporter_dpo_flow(params_file: str = "params.yaml") -> dict:
    return run_stage("train_supporter_dpo", params_file, run_supporter_dpo, ("supporter_dpo", "supporter_eval"))
