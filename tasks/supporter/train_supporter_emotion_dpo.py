"""Stage `train_supporter_emotion_dpo`: the Emotion-DPO baseline — the same DPO recipe as ES-VR
(tasks/supporter/train_supporter_dpo.py), on the emotion-reward pairs of the same rollouts, so the two models
differ only in their reward. Registered as `supporter`, alias `emotion-dpo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.common.config import Params
from tasks.supporter.train_supporter_dpo import run_supporter_dpo


def run_supporter_emotion_dpo(cfg: Params, pairs_dir: Path | None = None, models: Path | None = None,
                              ckpt_root: Path | None = None, register_model: bool = True) -> dict[str, Any]:
    return run_supporter_dpo(cfg, "emotion", pairs_dir, models, ckpt_root, register_model)
