"""Stages `train_tvd`, `train_rg_sft`, `train_rg_dpo`: the Target Value Detector and the Reference Generator.

Each `run_*` reads the datasets of docs/CONTRACTS.md (datasets → data/datasets/), trains through tasks.trainers,
evaluates (tasks.train_eval), writes the merged model to models/<name>/ and, inside the stage's MLflow run, logs
the model folder (adapter, tokenizer, chat template included) and registers it: `tvd` (aliases sft, champion) and
`reference-generator` (aliases sft, dpo, champion). Later stages load `models:/reference-generator@champion`
with `load_registered()` or read models/rg_dpo/ directly.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from tasks import paths, tiny_lm, train_eval, trainers
from tasks.io import read_jsonl

log = logging.getLogger(__name__)

TVD_MODEL, RG_MODEL = "tvd", "reference-generator"


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

    from tasks.devices import torch_device

    tok = tiny_lm.load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    return model.to(torch_device()), tok  # evaluation generates with it: an 8B model on the worker's GPU


def register(model_dir: Path, name: str, aliases: list[str], artifact_path: str = "model",
             log_files: str = "merged") -> str:
    """Log the model folder into the active MLflow run and register it as a new version of `name` with `aliases`."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run = mlflow.active_run()
    if run is None:
        raise TrainStageError("register() needs an active MLflow run (call it inside tracking.stage_run)")
    src = Path(model_dir)
    if log_files == "adapter":  # paper profile: 16 GB merged weights stay in DVC; MLflow keeps adapter + tokenizer
        for f in src.iterdir():
            if f.is_file() and not f.name.endswith(".safetensors"):
                mlflow.log_artifact(str(f), artifact_path)
        mlflow.log_artifacts(str(src / "adapter"), f"{artifact_path}/adapter")
    else:
        mlflow.log_artifacts(str(src), artifact_path)
    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already registered: add a version
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run.info.run_id)
    for a in aliases:
        client.set_registered_model_alias(name, a, mv.version)
    log.info("registered %s version %s with aliases %s", name, mv.version, aliases)
    return str(mv.version)


def load_registered(name: str, alias: str, dst: str | Path) -> Path:
    """Download `models:/<name>@<alias>` into `dst` and return the folder (a HF model folder with its template)."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@{alias}", dst_path=str(dst)))


def _log_curves(res: trainers.TrainResult, prefix: str) -> None:
    """The HF callback logs curves when report_to=mlflow; add the run summary under stable names."""
    import mlflow

    mlflow.log_metrics({f"{prefix}.train_loss": res.train_loss, f"{prefix}.global_step": res.global_step,
                        f"{prefix}.seconds": res.seconds,
                        **{f"{prefix}.{k.replace('/', '_')}": v for k, v in res.eval_metrics.items()
                           if math.isfinite(v) and not k.endswith(("runtime", "per_second"))}})


def _finite(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float) and math.isfinite(float(v))}


# --------------------------------------------------------------------------------------------------- TVD
def run_tvd(cfg: Any, ds_dir: Path | None = None, models: Path | None = None, ckpt_root: Path | None = None,
            register_model: bool = True) -> dict[str, Any]:
    """SFT the TVD, evaluate on test against the majority prior; returns the metrics."""
    ds_dir = ds_dir or paths.DATA / "datasets" / "tvd"
    models = models or paths.MODELS
    ckpt_root = ckpt_root or paths.ROOT / "checkpoints"
    t = cfg.train
    tok = tiny_lm.load_tokenizer(models / "tokenizer")
    base = tiny_lm.resolve_base(models / "base")
    train, val, test = (read_split(ds_dir, s) for s in ("train", "validation", "test"))
    res = trainers.sft(train, base, tok, t.tvd, t.trainer, t.lora, cfg.seed, models / "tvd", ckpt_root / "train_tvd",
                       eval_dataset=val, dtype=cfg.base_model.dtype)
    golds = [train_eval.parse_values(r["messages"][-1]["content"])[0] for r in test]
    prior = train_eval.majority_prior([train_eval.parse_values(r["messages"][-1]["content"])[0] for r in train])
    ev = test[: t.tvd_eval.limit] if t.tvd_eval.limit else test
    model, tok = load_causal_lm(models / "tvd", cfg.base_model.dtype)
    t0 = time.time()
    gens = train_eval.generate(model, tok, [r["messages"][:-1] for r in ev], t.tvd_eval.max_new_tokens,
                               t.tvd_eval.batch_size, t.trainer.max_length)
    metrics: dict[str, Any] = dict(train_eval.tvd_metrics(gens, golds[: len(ev)], prior))
    metrics.update(train_loss=res.train_loss, global_step=res.global_step, train_seconds=res.seconds,
                   eval_seconds=round(time.time() - t0, 2), **{k: v for k, v in res.eval_metrics.items() if k == "eval_loss"})
    log.info("TVD test: F1 %.3f (baseline %.3f), malformed %d/%d; examples: %s", metrics["tvd.f1"],
             metrics["baseline.f1"], metrics["malformed"], metrics["n_test"], gens[:3])
    if metrics["malformed_share"] > t.tvd_eval.max_malformed_share:
        raise TrainStageError(f"TVD: {metrics['malformed_share']:.0%} malformed generations > "
                              f"train.tvd_eval.max_malformed_share={t.tvd_eval.max_malformed_share}; train longer")
    if register_model:
        import mlflow

        _log_curves(res, "sft")
        mlflow.log_metrics(_finite(metrics))
        mlflow.log_dict({"prior": prior, "examples": [{"id": r["id"], "gen": g} for r, g in zip(ev[:20], gens, strict=False)]},
                        "tvd_examples.json")
        metrics["model_version"] = register(models / "tvd", TVD_MODEL, ["sft", "champion"], log_files=t.trainer.mlflow_log)
    return metrics


# --------------------------------------------------------------------------------------------------- RG
def run_rg_sft(cfg: Any, ds_dir: Path | None = None, models: Path | None = None, ckpt_root: Path | None = None,
               register_model: bool = True) -> dict[str, Any]:
    """SFT the reference generator on rg_sft; eval loss on its test split."""
    ds_dir = ds_dir or paths.DATA / "datasets" / "rg_sft"
    models = models or paths.MODELS
    ckpt_root = ckpt_root or paths.ROOT / "checkpoints"
    t = cfg.train
    tok = tiny_lm.load_tokenizer(models / "tokenizer")
    base = tiny_lm.resolve_base(models / "base")
    train, val = read_split(ds_dir, "train"), read_split(ds_dir, "validation")
    res = trainers.sft(train, base, tok, t.rg_sft, t.trainer, t.lora, cfg.seed, models / "rg_sft",
                       ckpt_root / "train_rg_sft", eval_dataset=val, dtype=cfg.base_model.dtype)
    metrics: dict[str, Any] = {"train_loss": res.train_loss, "global_step": res.global_step, "train_seconds": res.seconds,
                               "eval_loss": res.eval_metrics.get("eval_loss", math.nan)}
    if register_model:
        _log_curves(res, "sft")
        metrics["model_version"] = register(models / "rg_sft", RG_MODEL, ["sft", "champion"], log_files=t.trainer.mlflow_log)
    return metrics


class _AnnotatorDetector:
    """Adapter over tasks.annotators (the annotate stage's MeanPoolClassifier + calibrated per-label thresholds)."""

    def __init__(self, model: Any, thresholds: Any, labels: list[str]):
        self.model, self.thresholds, self.labels = model, list(thresholds), labels

    def present(self, texts: list[str]) -> list[list[str]]:
        probs = self.model.predict_proba(texts)
        return [[c for c, p, th in zip(self.labels, row, self.thresholds, strict=True) if p >= th] for row in probs]


def _detector(cfg: Any) -> tuple[Any | None, str]:
    """The value detector of the annotate stage, or None and the reason it is unavailable (the metric is optional)."""
    path = paths.ROOT / cfg.train.rg_eval.value_detector
    if not path.exists():
        return None, f"no value detector at {path} (run the annotate stages: dvc repro train_value_detector)"
    try:
        from tasks import values  # type: ignore[attr-defined]  # a dedicated loader, if the annotate stage ships one

        return values.load_detector(path), ""
    except (ImportError, AttributeError):
        pass
    try:
        from tasks.annotators import load_annotator
        from tasks.taxonomy import VALUE_CATEGORIES

        model, th, meta, _ = load_annotator(path)
        labels = list(getattr(model, "label_names", None) or meta.get("label_names") or VALUE_CATEGORIES)
        return _AnnotatorDetector(model, th, labels), ""
    except ImportError as e:
        return None, f"no detector loader (tasks/values.py or tasks/annotators.py): {e}"
    except Exception as e:  # noqa: BLE001 - an optional metric: report why and go on
        return None, f"loading the value detector {path} failed: {e}"


def _detect(detector: Any, texts: list[str]) -> list[list[str]]:
    """Category names the detector finds present in each text (`present()` API, or `predict()` probabilities)."""
    from tasks.taxonomy import VALUE_CATEGORIES

    if callable(getattr(detector, "present", None)):
        return [list(x) for x in detector.present(texts)]
    probs = detector.predict(texts)
    raw: Any = getattr(detector, "thresholds", 0.5)
    thr = [float(x) for x in raw] if hasattr(raw, "__len__") else [float(raw)] * len(VALUE_CATEGORIES)
    return [[c for c, p, th in zip(VALUE_CATEGORIES, row, thr, strict=True) if p >= th] for row in probs]


def _rg_eval(model: Any, tok: Any, sft_test: list[dict], pairs: list[dict], t: Any) -> tuple[dict[str, float], list, list, list[str]]:
    """Eval loss on rg_sft test, log-probs of held-out pairs, generated references for the value-hit rate."""
    ml, bs = t.trainer.max_length, t.trainer.per_device_eval_batch_size
    s, n = train_eval.completion_logps(model, tok, [r["messages"][:-1] for r in sft_test], [r["messages"][-1:] for r in sft_test], ml, bs)
    c, _ = train_eval.completion_logps(model, tok, [r["prompt"] for r in pairs], [r["chosen"] for r in pairs], ml, bs)
    rj, _ = train_eval.completion_logps(model, tok, [r["prompt"] for r in pairs], [r["rejected"] for r in pairs], ml, bs)
    ev = sft_test[: t.rg_eval.limit] if t.rg_eval.limit else sft_test
    gens = train_eval.generate(model, tok, [r["messages"][:-1] for r in ev], t.rg_eval.max_new_tokens, t.rg_eval.batch_size, ml)
    return {"eval_loss": train_eval.nll_per_token(s, n)}, c, rj, gens


def run_rg_dpo(cfg: Any, ds_dir: Path | None = None, models: Path | None = None, ckpt_root: Path | None = None,
               register_model: bool = True) -> dict[str, Any]:
    """DPO from the SFT model on rg_pairs; SFT vs DPO side by side on held-out data; champion alias by the rule below."""
    ds_root = ds_dir or paths.DATA / "datasets"
    models = models or paths.MODELS
    ckpt_root = ckpt_root or paths.ROOT / "checkpoints"
    t = cfg.train
    tok = tiny_lm.load_tokenizer(models / "rg_sft")  # the template the SFT stage trained with
    pairs_train, pairs_val = read_split(ds_root / "rg_pairs", "train"), read_split(ds_root / "rg_pairs", "validation")
    pairs_test = read_split(ds_root / "rg_pairs", "test")
    pairs_test = pairs_test[: t.rg_eval.pair_limit] if t.rg_eval.pair_limit else pairs_test
    sft_test = read_split(ds_root / "rg_sft", "test")
    res = trainers.dpo(pairs_train, str(models / "rg_sft"), tok, t.rg_dpo, t.trainer, t.lora, cfg.seed, models / "rg_dpo",
                       ckpt_root / "train_rg_dpo", eval_pairs=pairs_val, dtype=cfg.base_model.dtype)
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
            found = [d if g.strip() else [] for d, g in zip(_detect(detector, gens), gens, strict=True)]
            m["value_hit_rate"] = train_eval.value_hits(found, [r.get("target_values", []) for r in sft_test[: len(gens)]])
        side[name] = m
        del model
    if detector is not None and sft_test:  # the human replies of the test split: what a hit rate can reach
        ev = sft_test[: t.rg_eval.limit] if t.rg_eval.limit else sft_test
        gold = _detect(detector, [r["messages"][-1]["content"] for r in ev])
        side["reference"] = {"value_hit_rate": train_eval.value_hits(gold, [r.get("target_values", []) for r in ev])}
    for name in ("sft", "dpo"):
        (chosen, rejected), (ref_c, ref_r) = logps[name], (logps["sft"] if name == "dpo" else (None, None))
        side[name].update(train_eval.preference_metrics(chosen, rejected, ref_c, ref_r, beta=t.rg_dpo.beta))
    # Champion: DPO replaces SFT only if it prefers the held-out chosen replies at least as often (and, when the
    # detector is available, does not lower the value-hit rate).
    better = side["dpo"].get("pref_accuracy", 0) >= side["sft"].get("pref_accuracy", 0) and (
        detector is None or side["dpo"]["value_hit_rate"] >= side["sft"]["value_hit_rate"])
    champion = "dpo" if better else "sft"
    metrics: dict[str, Any] = {"train_loss": res.train_loss, "global_step": res.global_step, "train_seconds": res.seconds,
                               "eval_seconds": round(time.time() - t0, 2), "n_pairs_test": len(pairs_test),
                               "champion_is_dpo": int(champion == "dpo"),
                               "value_hit_skipped": int(detector is None)}
    for name, m in side.items():
        metrics.update({f"{name}.{k}": v for k, v in m.items()})
    metrics.update({f"train.{k.replace('/', '_')}": v for k, v in res.eval_metrics.items() if "rewards" in k})
    log.info("RG held-out: %s", {k: round(v, 4) for k, v in _finite(metrics).items()})
    if register_model:
        import mlflow

        _log_curves(res, "dpo")
        mlflow.log_metrics(_finite(metrics))
        mlflow.set_tag("value_hit_rate", "skipped: " + why if detector is None else "computed")
        mlflow.log_dict(examples, "rg_examples.json")
        metrics["model_version"] = register(models / "rg_dpo", RG_MODEL, ["dpo"], log_files=t.trainer.mlflow_log)
        from mlflow import MlflowClient

        client = MlflowClient()
        version = metrics["model_version"] if champion == "dpo" else client.get_model_version_by_alias(RG_MODEL, "sft").version
        client.set_registered_model_alias(RG_MODEL, "champion", version)
        mlflow.set_tag("champion", champion)
    return metrics
