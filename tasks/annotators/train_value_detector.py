"""Stage `train_value_detector`: MiniLM (paper: DeBERTa-v3-large) + mean pooling, 20 Touché23 value categories,
threshold(s) chosen on validation; registered as `value-detector@champion`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.annotators.stage import train_and_log

TASK = "value_detector"


def train_value_detector(params_file: str = "params.yaml", out_dir: Path | None = None) -> dict[str, Any]:
    """Train, log and register the model; returns the stage's metrics."""
    return train_and_log(TASK, params_file, out_dir)
