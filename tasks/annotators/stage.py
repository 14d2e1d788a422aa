"""The shell both annotator stages run (`train_value_detector`, `train_emotion`): train inside the stage's MLflow
run, log curves, held-back and choose-set metrics (and the detector's presence figures) and the model folder, check
the gates, register it with alias `champion`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.annotators import classifier
from tasks.annotators.classifier import LabelledTexts, MeanPoolClassifier, TrainResult
from tasks.common import paths, registry
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run

log = logging.getLogger(__name__)


def external(name: str) -> Path:
    """data/external/<name>/, staged by the `sources` stage."""
    p = paths.EXTERNAL / name
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: not staged; run `esvr stage sources` (or `dvc repro sources`) first")
    return p


def load_task_data(task: str, acfg: Any, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    """(train, dev) for `value_detector` (Touché23 training/validation) or `emotion` (GoEmotions train/dev)."""
    if task == "value_detector":
        d = external("touche23")
        tr = classifier.read_touche(d / "arguments-training.tsv", d / "labels-training.tsv")
        dv = classifier.read_touche(d / "arguments-validation.tsv", d / "labels-validation.tsv")
    elif task == "emotion":
        d = external("goemotions")
        names = classifier.read_emotion_names(d / "emotions.txt")
        tr = classifier.read_goemotions(d / "train.tsv", names)
        dv = classifier.read_goemotions(d / "dev.tsv", names)
    else:
        raise ValueError(f"unknown annotator task {task!r}")
    return classifier.subset(tr, acfg.limit_train, seed), classifier.subset(dv, acfg.limit_dev, seed + 1)


TASKS = {  # task -> (dvc stage, output folder, registered model name, selection metric)
    "value_detector": ("train_value_detector", "value_detector", "value-detector", "touche_f1"),
    "emotion": ("train_emotion", "emotion", "emotion-model", "macro_f1"),
}


class AnnotatorGateError(RuntimeError):
    """A trained annotator below its gate (held-back score, presence probes); the message names the params key."""


@dataclass
class Extension:
    """What one annotator adds to the shared recipe (the value detector: value-free rows, its presence rule and the
    presence figures; tasks/annotators/train_value_detector.py). Kept out of here so the emotion stage does not
    depend on that code."""

    #: (train, choose, seed) -> (train, choose) with extra rows
    augment: Callable[[LabelledTexts, LabelledTexts, int], tuple[LabelledTexts, LabelledTexts]]
    #: (model folder, thresholds, model) -> None, after every save of the model (checkpoints included)
    on_save: Callable[[Path, np.ndarray, MeanPoolClassifier], None]
    #: (model, thresholds, seed) -> extra summary entries, computed on held-back sources
    report: Callable[[MeanPoolClassifier, np.ndarray, int], dict[str, Any]]
    #: summary -> gate failures (messages)
    gates: Callable[[dict[str, Any]], list[str]]


def score_gate(task: str, acfg: Any, summary: dict[str, Any]) -> list[str]:
    """The held-back score gate shared by both annotators."""
    key = "f1" if task == "value_detector" else "macro_f1"
    if summary[key] < acfg.min_report_score:
        return [f"{task}: held-back {key} {summary[key]:.3f} < {task}.min_report_score {acfg.min_report_score}; "
                "the model is broken or the recipe regressed"]
    return []


def run_train(task: str, acfg: Any, seed: int, out_dir: str | Path | None = None,
              on_metrics: Callable[[dict[str, float], int], None] | None = None,
              ext: Extension | None = None) -> tuple[TrainResult, dict[str, Any]]:
    """Read the staged data, train, save the model folder (models/<task>/) and return (result, summary metrics).

    Validation/dev is split (`report_fraction`, by id) into a *choose* part, which picks the epoch and the
    thresholds, and a *report* part, which only reports: the summary's `f1`/`macro_f1`/... are held-back figures,
    `choose_*` the figures of the part that chose.
    """
    _, folder, _, metric = TASKS[task]
    out = Path(out_dir) if out_dir else paths.MODELS / folder
    train, dev = load_task_data(task, acfg, seed)
    choose, report = classifier.holdout_split(dev, acfg.report_fraction, seed)
    if ext is not None:
        train, choose = ext.augment(train, choose, seed)
    log.info("%s: %d train / %d choose / %d report rows, config %s", task, len(train.texts), len(choose.texts),
             len(report.texts), acfg.model_dump())

    def save(model: MeanPoolClassifier, th: np.ndarray, epoch: int) -> None:
        model.save(out, th, extra={"task": task, "base_model": acfg.base_model, "metric": metric,
                                   "best_epoch": epoch, "threshold_mode": acfg.threshold_mode})
        if task == "emotion":  # positivity needs the sentiment grouping at inference time: ship it with the model
            src = external("goemotions") / "sentiment_dict.json"
            (out / "sentiment_dict.json").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
        if ext is not None:
            ext.on_save(out, th, model)

    res = classifier.train_classifier(train, choose, acfg, seed, metric, on_metrics=on_metrics, on_best=save)
    save(res.model, res.thresholds, res.best_epoch)
    rep = classifier.evaluate(res.model.predict_proba(report.texts, batch_size=128, max_tokens=8192), report.labels,
                              res.thresholds, report.label_names)
    summary: dict[str, Any] = {
        # held-back figures (chose nothing) first; the choose-set figures are what selected epoch and thresholds
        "f1": rep["f1"], "macro_precision": rep["macro_precision"], "macro_recall": rep["macro_recall"],
        "macro_f1": rep["macro_f1"], "n_report": len(report.texts),
        "choose_f1": res.eval["f1"], "choose_macro_f1": res.eval["macro_f1"], "n_choose": len(choose.texts),
        "best_epoch": res.best_epoch, "train_seconds": res.seconds, "steps": res.steps, "n_train": len(train.texts),
        "report_per_category_f1": {k: v["f1"] for k, v in rep["per_category"].items()},
    }
    if ext is not None:
        summary.update(ext.report(res.model, res.thresholds, seed))
    res.eval = {"choose": res.eval, "report": rep}
    return res, summary


def flat(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """Numeric leaves of a nested summary as dotted metric names (MLflow)."""
    out: dict[str, float] = {}
    for k, v in report.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict):
            out.update(flat(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out[key] = float(v)
    return out


def train_and_log(task: str, params_file: str, out_dir: Path | None = None,
                  extension: Callable[[Any], Extension] | None = None) -> dict:
    """Train one annotator inside its MLflow stage run: params, per-epoch curves, per-category metrics, artifacts.
    `extension(params group)` builds what the annotator adds (Extension)."""
    stage, folder, reg_name, _ = TASKS[task]
    cfg_all = stage_params(stage, paths.ROOT / params_file)
    cfg = getattr(cfg_all, task)
    out = out_dir or paths.MODELS / folder
    ext = extension(cfg) if extension else None
    with stage_run(stage, cfg_all.profile, cfg_all.tracking.experiment, params={task: cfg.model_dump(), "seed": cfg_all.seed}) as run:
        import mlflow

        def on_metrics(m: dict[str, float], step: int) -> None:
            mlflow.log_metrics({k: float(v) for k, v in m.items()}, step=step)

        res, summary = run_train(task, cfg, cfg_all.seed, out, on_metrics=on_metrics, ext=ext)
        mlflow.log_metrics(flat(summary, "final"))
        for split in ("report", "choose"):  # per category on the held-back part, and on what chose the thresholds
            for name, m in res.eval[split]["per_category"].items():
                key = "".join(c if c.isalnum() else "_" for c in name).strip("_")
                mlflow.log_metrics({f"{split}.cat.{key}.f1": m["f1"], f"{split}.cat.{key}.precision": m["precision"],
                                    f"{split}.cat.{key}.recall": m["recall"]})
        mlflow.log_dict({"history": res.history, "eval": res.eval, "presence": summary.get("presence")},
                        "eval/dev_eval.json")
        report = {**summary, "registered_version": None}
        write_json(paths.METRICS / f"{stage}.json", report)  # written first: a failed gate leaves its numbers
        failed = score_gate(task, cfg, summary) + (ext.gates(summary) if ext else [])
        if failed:  # a broken model fails here, before it is registered
            raise AnnotatorGateError("; ".join(failed))
        mlflow.log_artifacts(str(out), artifact_path="model")
        if cfg.register_champion:
            report["registered_version"] = registry.register_logged(
                f"{run.info.artifact_uri}/model", reg_name, run.info.run_id, ["champion"],
                description=f"esvr annotator (stage {stage})")
            write_json(paths.METRICS / f"{stage}.json", report)
    log.info("%s done: %s", stage, summary)
    return report
