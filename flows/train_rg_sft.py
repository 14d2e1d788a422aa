"""Flow of stage `train_rg_sft` (the work: tasks/train/train_rg_sft.py)."""

from __future__ import annotations

from prefect import flow

from tasks.train.common import run_stage
from tasks.train.train_rg_sft import run_rg_sft


@flow(name="train_rg_sft", log_prints=False)
def train_rg_sft_flow(params_file: str = "params.yaml") -> dict:
    return run_stage("train_rg_sft", params_file, run_rg_sft, ("rg_sft",))
