"""What the training stages share: reading the datasets, loading a trained causal LM, the stage shell
(params → MLflow run → metrics file) and summary metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.common import paths
from tasks.common.config import Params
from tasks.common.io import read_jsonl, write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.domain import chat_template
from tasks.train import trainers

log = logging.getLogger(__name__)

TVD_MODEL, RG_MODEL, SUPPORTER_MODEL = "tvd", "reference-generator", "supporter"


class TrainStageError(RuntimeError):
    """A training stage cannot run or its output is unusable; the message says how to fix it."""


# --------------------------------------------------------------------------------------------------- I/O helpers
def read_split(ds_dir: Path, split: str, required: bool = True) -> list[dict[str, Any]]:
    path = ds_dir / f"{split}.jsonl"
    if not path.is_file():
        if required:
            raise TrainStageError(f"{path}: missing; run `dvc repro datasets` (contract: docs/CONTRACTS.md datasets)")
        return []
    return list(read_jsonl(path))


def load_causal_lm(model_dir: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.common.devices import torch_device

    tok = chat_template.load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    return model.to(torch_device()), tok  # evaluation generates with it: an 8B model on the worker's GPU


def log_curves(res: trainers.TrainResult, prefix: str) -> None:
    """The HF callback logs curves when report_to=mlflow; add the run summary under stable names."""
    import mlflow

    mlflow.log_metrics({f"{prefix}.train_loss": res.train_loss, f"{prefix}.global_step": res.global_step,
                        f"{prefix}.seconds": res.seconds,
                        **{f"{prefix}.{k.replace('/', '_')}": v for k, v in res.eval_metrics.items()
                           if math.isfinite(v) and not k.endswith(("runtime", "per_second"))}})


def finite(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float) and math.isfinite(float(v))}




def run_stage(stage: str, params_file: str, run_fn: Callable[[Params], dict[str, Any]], groups: tuple[str, ...]) -> dict:
    """The shell every training flow runs: its params, one MLflow run with a bounded param set, metrics/<stage>.json."""
    cfg = stage_params(stage, paths.ROOT / params_file)
    t = cfg.train
    # A bounded param set: the stage's own groups, not the ~170 TrainingArguments fields.
    params = {"seed": cfg.seed, "dtype": cfg.base_model.dtype, "trainer": t.trainer, "run": t.run, "lora": t.lora,
              **{g: getattr(t, g) for g in groups}}
    log.info("%s: %s", stage, params)
    with stage_run(stage, cfg.profile, cfg.tracking.experiment, params=params):
        metrics = run_fn(cfg)
        write_json(paths.METRICS / f"{stage}.json", metrics)
    return metrics
