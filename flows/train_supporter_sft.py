"""Flow of stage `train_supporter_sft` (the work: tasks/supporter/train_supporter_sft.py)."""

from __future__ import annotations

from prefect import flow

from tasks.supporter.train_supporter_sft import run_supporter_sft
from tasks.train.common import run_stage


@flow(name="train_supporter_sft", log_prints=False)
def train_supporter_sft_flow(params_file: str = "params.yaml") -> dict:
    return run_stage("train_supporter_sft", params_file, run_supporter_sft, ("supporter_sft", "supporter_eval"))
