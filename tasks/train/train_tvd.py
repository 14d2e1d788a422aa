"""Stage `train_tvd`: LoRA SFT of the Target Value Detector (history → the next OP turn's values), evaluated on
test against the majority prior; registered as `tvd` (aliases sft, champion)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tasks import base_model
from tasks.common import paths, registry
from tasks.common.config import Params
from tasks.domain import chat_template, prompts
from tasks.train import evaluation as train_eval
from tasks.train import portable, trainers
from tasks.train.common import TVD_MODEL, TrainStageError, finite, load_causal_lm, log_curves, read_split

log = logging.getLogger(__name__)


def malformed_gate(metrics: dict[str, Any], max_share: float) -> None:
    """Fail the stage (before registering) when more test answers *as served* than `max_share` are unusable: decoded
    the way every consumer decodes the TVD (`train_eval.served_tvd`: the regex, then only repeated slots again),
    an answer without three distinct categories after TVD_K rounds (cut by max_new_tokens, or a model that keeps
    naming the same ones) cannot feed the supporter. How often a repeat needed resampling is reported beside it."""
    if metrics["served.malformed_share"] > max_share:
        raise TrainStageError(f"TVD: {metrics['served.malformed_share']:.0%} malformed generations as served (regex-"
                              f"constrained) > train.tvd_eval.max_malformed_share={max_share}; train longer")


def run_tvd(cfg: Params, ds_dir: Path | None = None, models: Path | None = None, ckpt_root: Path | None = None,
            register_model: bool = True) -> dict[str, Any]:
    """SFT the TVD, evaluate on test against the majority prior; returns the metrics."""
    ds_dir = ds_dir or paths.DATASETS / "tvd"
    models = models or paths.MODELS
    ckpt_root = ckpt_root or paths.CHECKPOINTS
    t = cfg.train
    tok = chat_template.load_tokenizer(models / "tokenizer")
    base = base_model.resolve_base(models / "base")
    train, val, test = (read_split(ds_dir, s) for s in ("train", "validation", "test"))
    res = trainers.sft(train, base, tok, t.tvd, t.trainer, t.run, t.lora, cfg.seed, models / "tvd", ckpt_root / "train_tvd",
                       eval_dataset=val, dtype=cfg.base_model.dtype)
    portable.finalize(models / "tvd", base)  # the registered adapter names its base portably (hub id / models/base)
    golds = [train_eval.parse_values(r["messages"][-1]["content"])[0] for r in test]
    prior = train_eval.majority_prior([train_eval.parse_values(r["messages"][-1]["content"])[0] for r in train])
    ev = test[: t.tvd_eval.limit] if t.tvd_eval.limit else test
    model, tok = load_causal_lm(models / "tvd", cfg.base_model.dtype)
    t0 = time.time()
    gens = train_eval.generate(model, tok, [r["messages"][:-1] for r in ev], t.tvd_eval.max_new_tokens,
                               t.tvd_eval.batch_size, t.trainer["max_length"])
    metrics: dict[str, Any] = dict(train_eval.tvd_metrics(gens, golds[: len(ev)], prior))
    # As served: simulate, rollouts and evaluation decode the TVD under this regex; free decoding above shows whether
    # the model learned the format on its own.
    answers, rounds = train_eval.served_tvd(model, tok, [r["messages"][:-1] for r in ev], t.tvd_eval.max_new_tokens,
                                            t.tvd_eval.batch_size, t.trainer["max_length"])
    served = [prompts.format_tvd_answer(a) if a else "" for a in answers]
    metrics.update({f"served.{k}": v for k, v in train_eval.tvd_metrics(served, golds[: len(ev)], prior).items()
                    if k.startswith("tvd.")})
    unusable = sum(len(a) < prompts.TVD_K for a in answers)
    metrics.update({"served.malformed": unusable, "served.malformed_share": unusable / len(ev) if ev else 0.0,
                    "served.resampled_share": sum(r > 0 for r in rounds) / len(ev) if ev else 0.0})
    metrics.update(train_loss=res.train_loss, global_step=res.global_step,
                   **{k: v for k, v in res.eval_metrics.items() if k == "eval_loss"})
    timings = {"train_seconds": res.seconds, "eval_seconds": round(time.time() - t0, 2)}  # MLflow only
    log.info("TVD test: F1 %.3f (baseline %.3f), malformed %d/%d free; as served F1 %.3f, %d/%d unusable, %.0f%% "
             "resampled; examples: %s / %s", metrics["tvd.f1"], metrics["baseline.f1"], metrics["malformed"],
             metrics["n_test"], metrics["served.tvd.f1"], metrics["served.malformed"], metrics["n_test"],
             100 * metrics["served.resampled_share"], gens[:3], served[:3])
    malformed_gate(metrics, t.tvd_eval.max_malformed_share)
    if register_model:
        import mlflow

        log_curves(res, "sft")
        mlflow.log_metrics(finite({**metrics, **timings}))
        mlflow.log_dict({"prior": prior, "examples": [{"id": r["id"], "gen": g, "served": sv}
                                                      for r, g, sv in zip(ev[:20], gens, served, strict=False)]},
                        "tvd_examples.json")
        registry.register(models / "tvd", TVD_MODEL, ["sft", "champion"], files=t.run.mlflow_log)  # version: MLflow
    return metrics


