"""Flow of stage `train_supporter_emotion_dpo` (the work: tasks/supporter/train_supporter_emotion_dpo.py)."""

from __future__ import annotations

from prefect import flow

from tasks.supporter.train_supporter_emotion_dpo import run_supporter_emotion_dpo
from tasks.train.common import run_stage


@flow(name="train_supporter_emotion_dpo", log_prints=False)
def train_supporter_emotion_dpo_flow(params_file: str = "params.yaml") -> dict:
    return run_stage("train_supporter_emotion_dpo", params_file, run_supporter_emotion_dpo,
                     ("supporter_emotion_dpo", "supporter_eval"))
