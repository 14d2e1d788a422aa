"""Flow of stage `train_tvd` (the work: tasks/train/train_tvd.py)."""

from __future__ import annotations

from prefect import flow

from tasks.train.common import run_stage
from tasks.train.train_tvd import run_tvd


@flow(name="train_tvd", log_prints=False)
def train_tvd_flow(params_file: str = "params.yaml") -> dict:
    return run_stage("train_tvd", params_file, run_tvd, ("tvd", "tvd_eval"))
