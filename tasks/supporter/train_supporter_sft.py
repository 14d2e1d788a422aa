"""Stage `train_supporter_sft`: LoRA SFT of the supporter on the simulated dialogues (history + the turn's target
values + the reference response -> the 4 reasoning steps and the response, tasks/domain/supporter_format.py).

Every supporter turn of a simulated dialogue is one example. Its target is the teacher's answer or, when the
adoption choice drawn for that turn (`supporter.sft.adoption_rate`) differs from the teacher's, the same reasoning
with the teacher's alternative response (alt_response_with_reference / _without_reference). The student's
adoption rate is then measured on held-out prompts next to the teacher's and the training targets'.
Registered as model `supporter`, aliases `sft` and `champion` (until a DPO supporter beats it).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from tasks import base_model
from tasks.common import paths, registry
from tasks.common.config import Params
from tasks.common.tracking import flatten
from tasks.domain import chat_template
from tasks.supporter import examples as ex
from tasks.supporter import plots
from tasks.supporter.evaluation import answer_stats
from tasks.train import evaluation as train_eval
from tasks.train import trainers
from tasks.train.common import SUPPORTER_MODEL, TrainStageError, finite, load_causal_lm, log_curves, read_split

log = logging.getLogger(__name__)


def _take(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return rows[:limit] if limit else rows


def run_supporter_sft(cfg: Params, sim_dir: Path | None = None, models: Path | None = None,
                      ckpt_root: Path | None = None, register_model: bool = True) -> dict[str, Any]:
    """Build the SFT examples, train, measure the student's adoption rate; returns the metrics."""
    sim_dir = sim_dir or paths.SIMULATED
    models = models or paths.MODELS
    ckpt_root = ckpt_root or paths.CHECKPOINTS
    t, scfg = cfg.train, cfg.supporter.sft
    ml = int(ex.effective(t.trainer, t.supporter_sft.args, "max_length"))
    out = models / paths.SUPPORTER_SFT.name
    tok = chat_template.load_tokenizer(models / "tokenizer")
    base = base_model.resolve_base(models / "base")
    train_recs = read_split(sim_dir, "train")
    val_recs = read_split(sim_dir, "validation", required=False)
    ex_train = ex.sft_examples(train_recs, scfg.adoption_rate, cfg.seed)
    ex_val = ex.sft_examples(val_recs, scfg.adoption_rate, cfg.seed)
    if not ex_train:
        raise TrainStageError(f"{sim_dir}/train.jsonl has no supporter turns; run `dvc repro simulate`")
    fit_train, fit_val = ex.sft_rows(ex_train, tok, ml), ex.sft_rows(ex_val, tok, ml)
    rows = _take(fit_train.rows, t.supporter_sft.limit)
    if not rows:
        raise TrainStageError(f"no SFT example fits train.trainer.max_length={ml} (all {fit_train.dropped} dropped)")

    def check(trainer: Any) -> None:  # TRL must have kept every row with its whole answer
        ex.check_sft_dataset(trainer.train_dataset, rows, ml, "train_supporter_sft")

    res = trainers.sft(rows, base, tok, t.supporter_sft, t.trainer, t.run, t.lora, cfg.seed, out,
                       ckpt_root / "train_supporter_sft", eval_dataset=fit_val.rows or None,
                       dtype=cfg.base_model.dtype, on_trainer=check)

    # the student on held-out prompts (validation dialogues; the training ones when there are none)
    held = fit_val.rows or rows
    ev = _take(held, t.supporter_eval.limit)
    by_id = {e["id"]: e for e in ex_val + ex_train}
    model, mtok = load_causal_lm(out, cfg.base_model.dtype)
    t0 = time.time()
    gens = train_eval.generate(model, mtok, [r["messages"][:-1] for r in ev], t.supporter_eval.max_new_tokens,
                               t.supporter_eval.batch_size, ml)
    metrics: dict[str, Any] = {
        "train_loss": res.train_loss, "global_step": res.global_step, "train_seconds": res.seconds,
        "eval_seconds": round(time.time() - t0, 2), "eval_loss": res.eval_metrics.get("eval_loss", math.nan),
        "eval_on": "validation" if fit_val.rows else "train",
        "examples.train": len(ex_train), "examples.validation": len(ex_val),
        "teacher.adoption_rate": _share([e["teacher_adopt"] == "Yes" for e in ex_train]),
        "targets.adoption_rate": _share([r["adopt"] == "Yes" for r in rows]),
        "targets.alternative_share": _share([by_id[r["id"]]["alternative"] for r in rows]),
        **fit_train.metrics("fit.train"), **fit_val.metrics("fit.validation"),
        **answer_stats(gens, "student"),
    }
    metrics["teacher_eval.adoption_rate"] = _share([by_id[r["id"]]["teacher_adopt"] == "Yes" for r in ev])
    log.info("supporter SFT: teacher adoption %.2f, targets %.2f, student %.2f (%.0f%% well-formed); e.g. %r",
             metrics["teacher.adoption_rate"], metrics["targets.adoption_rate"], metrics["student.adoption_rate"],
             100 * metrics["student.well_formed_share"], gens[:1])
    malformed = 1.0 - metrics["student.well_formed_share"]
    if ev and malformed > t.supporter_eval.max_malformed_share:
        raise TrainStageError(f"supporter SFT: {malformed:.0%} malformed answers > train.supporter_eval."
                              f"max_malformed_share={t.supporter_eval.max_malformed_share}; train longer")
    if register_model:
        import mlflow

        log_curves(res, "sft")
        mlflow.log_metrics(finite(metrics))
        mlflow.log_params(flatten({"supporter.sft": scfg.model_dump()}))
        mlflow.log_dict({"examples": [{"id": r["id"], "prompt": r["messages"][:-1], "target": r["messages"][-1],
                                       "student": g} for r, g in zip(ev[:20], gens, strict=False)]},
                        "supporter_sft_examples.json")
        plots.log_figure(plots.bars({"teacher": metrics["teacher.adoption_rate"],
                                     "SFT targets": metrics["targets.adoption_rate"],
                                     "student": metrics["student.adoption_rate"]},
                                    "adoption of the reference", "share 'Yes'"), "adoption_rate.png")
        # champion until a DPO supporter does better (train_supporter_dpo's rule); `esvr serve` serves the champion
        metrics["model_version"] = registry.register(out, SUPPORTER_MODEL, ["sft", "champion"],
                                                     files=t.run.mlflow_log)
    return metrics


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0
