"""Stage `train_rg_dpo`: DPO of the Reference Generator from its SFT model (reference = the SFT model with the
adapter disabled); SFT vs DPO side by side on held-out data, and the `champion` alias by the rule in `run_rg_dpo`."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.annotators.classifier import load_annotator
from tasks.common import paths, registry
from tasks.common.config import Params
from tasks.domain import chat_template
from tasks.train import evaluation as train_eval
from tasks.train import portable, trainers
from tasks.train.common import RG_MODEL, TrainStageError, finite, load_causal_lm, log_curves, read_split

log = logging.getLogger(__name__)


def _detector(cfg: Params) -> tuple[Callable[[list[str]], list[list[str]]] | None, str]:
    """Values present in texts, by the annotate stage's value detector; None and the reason when it is absent (the
    value-hit rate is then skipped and the champion rule falls back to preference accuracy alone)."""
    path = paths.ROOT / cfg.train.rg_eval.value_detector
    if not path.exists():
        return None, f"no value detector at {path} (run `dvc repro train_value_detector`)"
    model, thresholds, _, _ = load_annotator(path)

    def detect(texts: list[str]) -> list[list[str]]:
        probs = model.predict_proba(texts)
        return [[c for c, p, th in zip(model.label_names, row, thresholds, strict=True) if p >= th] for row in probs]

    return detect, ""


def _rg_eval(model: Any, tok: Any, sft_test: list[dict], pairs: list[dict], t: Any) -> tuple[dict[str, float], list, list, list[str]]:
    """Eval loss on rg_sft test, log-probs of held-out pairs, generated references for the value-hit rate."""
    ml, bs = t.trainer["max_length"], t.trainer["per_device_eval_batch_size"]
    s, n = train_eval.completion_logps(model, tok, [r["messages"][:-1] for r in sft_test], [r["messages"][-1:] for r in sft_test], ml, bs)
    c, _ = train_eval.completion_logps(model, tok, [r["prompt"] for r in pairs], [r["chosen"] for r in pairs], ml, bs)
    rj, _ = train_eval.completion_logps(model, tok, [r["prompt"] for r in pairs], [r["rejected"] for r in pairs], ml, bs)
    ev = sft_test[: t.rg_eval.limit] if t.rg_eval.limit else sft_test
    gens = train_eval.generate(model, tok, [r["messages"][:-1] for r in ev], t.rg_eval.max_new_tokens, t.rg_eval.batch_size, ml)
    return {"eval_loss": train_eval.nll_per_token(s, n)}, c, rj, gens


def run_rg_dpo(cfg: Params, ds_dir: Path | None = None, models: Path | None = None, ckpt_root: Path | None = None,
               register_model: bool = True) -> dict[str, Any]:
    """DPO from the SFT model on rg_pairs; SFT vs DPO side by side on held-out data; champion alias by the rule below."""
    ds_root = ds_dir or paths.DATASETS
    models = models or paths.MODELS
    ckpt_root = ckpt_root or paths.CHECKPOINTS
    t = cfg.train
    tok = chat_template.load_tokenizer(models / "rg_sft")  # the template the SFT stage trained with
    pairs_train, pairs_val = read_split(ds_root / "rg_pairs", "train"), read_split(ds_root / "rg_pairs", "validation")
    pairs_test = read_split(ds_root / "rg_pairs", "test")
    pairs_test = pairs_test[: t.rg_eval.pair_limit] if t.rg_eval.pair_limit else pairs_test
    sft_test = read_split(ds_root / "rg_sft", "test")
    res = trainers.dpo(pairs_train, str(models / "rg_sft"), tok, t.rg_dpo, t.trainer, t.run, t.lora, cfg.seed, models / "rg_dpo",
                       ckpt_root / "train_rg_dpo", eval_pairs=pairs_val, dtype=cfg.base_model.dtype)
    if res.beta is None:
        raise TrainStageError("DPO result without beta: trainers.dpo records the beta TRL used")
    # DPO's adapter applies to the merged SFT model: compose it with the SFT adapter into one on the base (vLLM)
    portable.finalize(models / "rg_dpo", None, parent=models / "rg_sft" / "adapter")
    detector, why = _detector(cfg)
    if detector is None:
        log.warning("value-hit rate skipped: %s", why)
    side: dict[str, dict[str, float]] = {}
    logps: dict[str, tuple[list, list]] = {}
    examples: dict[str, list[str]] = {}
    t0 = time.time()
    for name in ("sft", "dpo"):
        model, mtok = load_causal_lm(models / f"rg_{name}", cfg.base_model.dtype)
        m, c, rj, gens = _rg_eval(model, mtok, sft_test, pairs_test, t)
        logps[name] = (c, rj)
        examples[name] = gens[:10]
        m["empty_share"] = sum(not g.strip() for g in gens) / len(gens) if gens else math.nan
        if detector is not None:
            # An empty generation is a miss whatever the detector says (its calibrated thresholds fire on "").
            found = [d if g.strip() else [] for d, g in zip(detector(gens), gens, strict=True)]
            m["value_hit_rate"] = train_eval.value_hits(found, [r.get("target_values", []) for r in sft_test[: len(gens)]])
        side[name] = m
        del model
    if detector is not None and sft_test:  # the human replies of the test split: what a hit rate can reach
        ev = sft_test[: t.rg_eval.limit] if t.rg_eval.limit else sft_test
        gold = detector([r["messages"][-1]["content"] for r in ev])
        side["reference"] = {"value_hit_rate": train_eval.value_hits(gold, [r.get("target_values", []) for r in ev])}
    for name in ("sft", "dpo"):
        (chosen, rejected), (ref_c, ref_r) = logps[name], (logps["sft"] if name == "dpo" else (None, None))
        side[name].update(train_eval.preference_metrics(chosen, rejected, ref_c, ref_r, beta=res.beta))
    # Champion: DPO replaces SFT only if it prefers the held-out chosen replies at least as often (and, when the
    # detector is available, does not lower the value-hit rate).
    better = side["dpo"].get("pref_accuracy", 0) >= side["sft"].get("pref_accuracy", 0) and (
        detector is None or side["dpo"]["value_hit_rate"] >= side["sft"]["value_hit_rate"])
    champion = "dpo" if better else "sft"
    timings = {"train_seconds": res.seconds, "eval_seconds": round(time.time() - t0, 2)}  # MLflow only
    metrics: dict[str, Any] = {"train_loss": res.train_loss, "global_step": res.global_step, "n_pairs_test": len(pairs_test),
                               "champion_is_dpo": int(champion == "dpo"),
                               "value_hit_skipped": int(detector is None)}
    for name, m in side.items():
        metrics.update({f"{name}.{k}": v for k, v in m.items()})
    metrics.update({f"train.{k.replace('/', '_')}": v for k, v in res.eval_metrics.items() if "rewards" in k})
    log.info("RG held-out: %s", {k: round(v, 4) for k, v in finite(metrics).items()})
    if register_model:
        import mlflow

        log_curves(res, "dpo")
        mlflow.log_metrics(finite({**metrics, **timings}))
        mlflow.set_tag("value_hit_rate", "skipped: " + why if detector is None else "computed")
        mlflow.log_dict(examples, "rg_examples.json")
        dpo_version = registry.register(models / "rg_dpo", RG_MODEL, ["dpo"], files=t.run.mlflow_log)
        version = dpo_version if champion == "dpo" else registry.alias_version(RG_MODEL, "sft")
        registry.set_alias(RG_MODEL, "champion", version)
        mlflow.set_tag("champion", champion)
    return metrics
