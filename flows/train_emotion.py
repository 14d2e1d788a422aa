"""Flow of stage `train_emotion` (the work: tasks/annotators/train_emotion.py)."""

from __future__ import annotations

from prefect import flow

from tasks.annotators.train_emotion import train_emotion


@flow(name="train_emotion", log_prints=False)
def train_emotion_flow(params_file: str = "params.yaml") -> dict:
    return train_emotion(params_file)
