"""Flow of stage `train_value_detector` (the work: tasks/annotators/train_value_detector.py)."""

from __future__ import annotations

from prefect import flow

from tasks.annotators.train_value_detector import train_value_detector


@flow(name="train_value_detector", log_prints=False)
def train_value_detector_flow(params_file: str = "params.yaml") -> dict:
    return train_value_detector(params_file)
