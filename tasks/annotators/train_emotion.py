"""Stage `train_emotion`: GoEmotions, 28 labels; positivity and negative intensity from its sentiment grouping;
registered as `emotion-model@champion`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.annotators.stage import train_and_log

TASK = "emotion"


def train_emotion(params_file: str = "params.yaml", out_dir: Path | None = None) -> dict[str, Any]:
    """Train, log and register the model; returns the stage's metrics."""
    return train_and_log(TASK, params_file, out_dir)
