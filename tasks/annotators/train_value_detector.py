"""Stage `train_value_detector`: MiniLM (paper: DeBERTa-v3-large) + mean pooling, 20 Touché23 value categories, and
the value-presence rule (tasks/annotators/presence.py) calibrated with it; registered as `value-detector@champion`.

What the value detector adds to the shared annotator recipe (tasks/annotators/stage.py):
* value-free texts (tasks/annotators/value_free.py, all labels 0) join training and the choose part of validation,
  so the epoch and the thresholds are chosen on a set where firing on small talk costs precision;
* `presence.json` = those thresholds + `value_detector.presence.min_chars` + the text-level gate `min_top` (the
  `presence.gate_quantile` quantile of the top probability over the choose set's arguments), written with every
  checkpoint;
* the presence figures (tasks/annotators/presence_eval.py) on sources that chose nothing: probes, value-laden
  sentences, FULCRA, a sample of ESConv seeker turns, held-back value-free texts;
* gates on the small-talk probes (`presence.max_probe_value_share`) and on the value-laden sentences
  (`presence.min_value_laden_kept`) beside the held-back F1 gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.annotators import classifier, presence_eval, value_free
from tasks.annotators.classifier import LabelledTexts, MeanPoolClassifier
from tasks.annotators.presence import PresenceRule, ValueDetector
from tasks.annotators.stage import Extension, external, train_and_log

TASK = "value_detector"
METRIC = "touche_f1"


def held_back_sources(pcfg: Any, seed: int) -> tuple[tuple[list[str], np.ndarray], list[str]]:
    """FULCRA (replies, labels) — the first `fulcra_limit` — and a seeded sample of ESConv seeker turns."""
    texts, labels, _ = presence_eval.read_fulcra(external("fulcra") / "trustworthy_data.jsonl")
    n = pcfg.fulcra_limit or len(texts)
    return (texts[:n], labels[:n]), presence_eval.esconv_seeker_turns(external("esconv"), pcfg.esconv_turns, seed)


def presence_extension(cfg: Any) -> Extension:
    """The value detector's Extension for `value_detector` params (`cfg`, with its `presence` group)."""
    pcfg = cfg.presence
    state: dict[str, Any] = {}

    def augment(train: LabelledTexts, choose: LabelledTexts, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
        pool = value_free.load_pool(pcfg, external("goemotions"), external("claff_offmychest"),
                                    presence_eval.REPORTED_TEXTS, seed,
                                    round(len(choose.texts) * pcfg.choose_ratio))
        state.update(pool=pool, seed=seed, choose_arguments=len(choose.texts), argument_texts=list(choose.texts))
        return (classifier.concat(train, classifier.unlabelled(pool.train, train.label_names, "vf-train-")),
                classifier.concat(choose, classifier.unlabelled(pool.choose, choose.label_names, "vf-choose-")))

    def gate(model: MeanPoolClassifier) -> float:
        """min_top: the `gate_quantile` quantile of the top probability over the choose set's arguments (all of them
        carry values), so the gate clears that share of value-laden texts at most (presence.py says why)."""
        if pcfg.gate_quantile <= 0:
            return 0.0
        top = model.predict_proba(state["argument_texts"], batch_size=128, max_tokens=8192).max(axis=1)
        return float(np.quantile(top, pcfg.gate_quantile))

    def rule(th: np.ndarray) -> PresenceRule:
        pool = state["pool"]
        return PresenceRule(tuple(float(x) for x in th), pcfg.min_chars, min_top=state.get("min_top", 0.0),
                            calibration={
            "objective": f"{METRIC} on the choose set (validation arguments + value-free texts)",
            "threshold_mode": cfg.threshold_mode, "choose_arguments": state["choose_arguments"],
            "choose_value_free": len(pool.choose), "train_value_free": len(pool.train),
            "gate": f"min_top = quantile {pcfg.gate_quantile} of the top probability over the choose arguments",
            "rule": value_free.RULE_VERSION, "value_free": pool.counts, "seed": state["seed"]})

    def on_save(folder: Path, th: np.ndarray, model: MeanPoolClassifier) -> None:
        state["min_top"] = gate(model)
        rule(th).save(folder)  # the presence rule travels with every checkpoint of the detector

    def report(model: MeanPoolClassifier, th: np.ndarray, seed: int) -> dict[str, Any]:
        figures = presence_eval.presence_report(ValueDetector(model, rule(th)), *held_back_sources(pcfg, seed),
                                                state["pool"].report)
        return {"presence": {**figures, "min_top": state.get("min_top", 0.0)}, "value_free": state["pool"].counts}

    def gates(summary: dict[str, Any]) -> list[str]:
        failed = []
        probes = summary["presence"]["probes_small_talk"]
        share = 1.0 - probes["share_no_value"]
        if share > pcfg.max_probe_value_share:
            failed.append(f"{TASK}: {share:.0%} of the small-talk probes get a value (> value_detector.presence."
                          f"max_probe_value_share {pcfg.max_probe_value_share}): {probes['with_value']}")
        laden = summary["presence"]["value_laden"]
        if laden["share_kept"] < pcfg.min_value_laden_kept:  # the other side: "no value" must not win everywhere
            failed.append(f"{TASK}: only {laden['share_kept']:.0%} of the value-laden sentences keep their category "
                          f"(< value_detector.presence.min_value_laden_kept {pcfg.min_value_laden_kept}); lost "
                          f"{laden['lost']}")
        return failed

    return Extension(augment, on_save, report, gates)


def evaluate_folder(folder: str | Path, cfg: Any, seed: int, min_chars: int | None = None) -> dict[str, Any]:
    """The stage's held-back figures for any detector folder (`esvr values presence`): official F1 on the report part
    of Touché validation (the split the stage uses) and every presence figure. `min_chars` overrides the folder's
    rule (0 = no length floor: how a folder without presence.json was used before the rule existed)."""
    from tasks.annotators.presence import load_detector
    from tasks.annotators.stage import load_task_data

    det = load_detector(folder)
    if min_chars is not None:
        det = ValueDetector(det.model, PresenceRule(det.rule.thresholds, min_chars, det.rule.labels,
                                                    min_top=det.rule.min_top))
    _, dev = load_task_data(TASK, cfg, seed)
    _, report = classifier.holdout_split(dev, cfg.report_fraction, seed)
    mask = det.mask(report.texts).astype(np.float32)
    rep = classifier.evaluate(mask, report.labels, np.full(len(report.label_names), 0.5), report.label_names)
    pool = value_free.load_pool(cfg.presence, external("goemotions"), external("claff_offmychest"),
                                presence_eval.REPORTED_TEXTS, seed,
                                round((len(dev.texts) - len(report.texts)) * cfg.presence.choose_ratio))
    fulcra, turns = held_back_sources(cfg.presence, seed)
    return {"model": str(folder), "min_chars": det.rule.min_chars, "min_top": det.rule.min_top,
            "thresholds": list(det.rule.thresholds),
            "report": {"f1": rep["f1"], "macro_precision": rep["macro_precision"], "macro_recall": rep["macro_recall"],
                       "macro_f1": rep["macro_f1"], "n": len(report.texts)},
            "presence": presence_eval.presence_report(det, fulcra, turns, pool.report)}


def train_value_detector(params_file: str = "params.yaml", out_dir: Path | None = None) -> dict[str, Any]:
    """Train, calibrate the presence rule, log and register the model; returns the stage's metrics."""
    return train_and_log(TASK, params_file, out_dir, presence_extension)
