"""Stage `train_rg_sft`: LoRA SFT of the Reference Generator (history + target values → reply); registered as
`reference-generator` (aliases sft, champion)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from tasks import base_model
from tasks.common import paths, registry
from tasks.common.config import Params
from tasks.domain import chat_template
from tasks.train import portable, trainers
from tasks.train.common import RG_MODEL, log_curves, read_split

log = logging.getLogger(__name__)


def run_rg_sft(cfg: Params, ds_dir: Path | None = None, models: Path | None = None, ckpt_root: Path | None = None,
               register_model: bool = True) -> dict[str, Any]:
    """SFT the reference generator on rg_sft; eval loss on its test split."""
    ds_dir = ds_dir or paths.DATASETS / "rg_sft"
    models = models or paths.MODELS
    ckpt_root = ckpt_root or paths.CHECKPOINTS
    t = cfg.train
    tok = chat_template.load_tokenizer(models / "tokenizer")
    base = base_model.resolve_base(models / "base")
    train, val = read_split(ds_dir, "train"), read_split(ds_dir, "validation")
    res = trainers.sft(train, base, tok, t.rg_sft, t.trainer, t.run, t.lora, cfg.seed, models / "rg_sft",
                       ckpt_root / "train_rg_sft", eval_dataset=val, dtype=cfg.base_model.dtype)
    portable.finalize(models / "rg_sft", base)  # the registered adapter names its base portably
    metrics: dict[str, Any] = {"train_loss": res.train_loss, "global_step": res.global_step,
                               "eval_loss": res.eval_metrics.get("eval_loss", math.nan)}
    if register_model:
        log_curves(res, "sft")  # train seconds and the registry version go to MLflow, not the metrics file
        registry.register(models / "rg_sft", RG_MODEL, ["sft", "champion"], files=t.run.mlflow_log)
    return metrics


