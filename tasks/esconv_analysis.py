"""ESConv analysis (the paper's motivation): do seekers whose distress fell the most voice more positive values at the
end of the conversation?

Groups, among conversations whose seeker reported initial emotion intensity 5 (`initial_intensity`):
high_effect = final intensity in `high_final` (1-2); low_effect = any other reported final intensity (3-5).
Conversations without a final score (about 150 of 1,300) have no outcome and are left out (counted as `no_final`).
Score per conversation: the number of (turn, category) predictions of a *positive* value (tasks.domain.taxonomy.POSITIVE_VALUES)
over the last `last_turns` seeker turns, each category counted when its probability reaches the detector's own
threshold from thresholds.json (or one fixed `presence_threshold`: the validation cut, picked on argument
triples that nearly all carry values, fires on most short dialogue turns). The groups are compared with a two-sided Mann-Whitney U test (counts are small
integers, far from normal) or Welch's t-test.

Pure core: `parse_conversations()`, `group_of()`, `analyse()`; I/O shell: `run()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tasks.domain.taxonomy import POSITIVE_MASK

log = logging.getLogger(__name__)

SPLITS = ("train.json", "valid.json", "test.json")
SEEKER = {"usr", "seeker", "user"}


def read_dir(folder: str | Path) -> list[dict[str, Any]]:
    """Conversations of ESConv's train/valid/test.json (JSON lines, or one JSON array per file)."""
    folder = Path(folder)
    convs: list[dict[str, Any]] = []
    missing = [s for s in SPLITS if not (folder / s).is_file()]
    if len(missing) == len(SPLITS):
        raise FileNotFoundError(f"{folder}: none of {SPLITS}; pass the folder that holds ESConv's split files")
    for s in SPLITS:
        p = folder / s
        if not p.is_file():
            log.warning("%s: missing, analysing the other splits", p)
            continue
        raw = p.read_bytes().strip()
        if raw.startswith(b"["):
            convs += orjson.loads(raw)
            continue
        for i, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    convs.append(orjson.loads(line))
                except orjson.JSONDecodeError as e:
                    raise ValueError(f"{p}:{i}: malformed JSON line: {e}") from None
    return convs


def _intensity(v: Any) -> int | None:
    try:
        x = int(str(v).strip())
    except (TypeError, ValueError):
        return None
    return x if 1 <= x <= 5 else None


def intensities(conv: dict[str, Any]) -> tuple[int | None, int | None]:
    """(initial, final) seeker emotion intensity from the survey (strings in the files; None when absent)."""
    seeker = (conv.get("survey_score") or {}).get("seeker") or {}
    return _intensity(seeker.get("initial_emotion_intensity")), _intensity(seeker.get("final_emotion_intensity"))


def group_of(conv: dict[str, Any], initial: int = 5, high_final: Iterable[int] = (1, 2)) -> str | None:
    """'high_effect', 'low_effect', 'no_final' or None (initial intensity other than `initial`)."""
    ini, fin = intensities(conv)
    if ini != initial:
        return None
    if fin is None:
        return "no_final"
    return "high_effect" if fin in set(high_final) else "low_effect"


def last_seeker_turns(conv: dict[str, Any], k: int) -> list[str]:
    """Texts of the last `k` seeker turns (speaker usr/seeker), in order."""
    turns = [t.get("text", "") for t in conv.get("dialog", []) if str(t.get("speaker", "")).lower() in SEEKER]
    return [t for t in turns if isinstance(t, str) and t.strip()][-k:]


def positive_counts(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of positive-value categories predicted per row."""
    return ((probs >= thresholds) & np.asarray(POSITIVE_MASK)).sum(1)


def significance(a: np.ndarray, b: np.ndarray, test: str) -> float:
    """Two-sided p-value of the difference between the two groups (nan when a group is empty)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if test == "welch":
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def analyse(convs: list[dict[str, Any]], predict: Any, thresholds: np.ndarray, cfg: Any) -> dict[str, Any]:
    """Group the conversations, score each one's last seeker turns with `predict(texts) -> probs`, compare groups."""
    groups: dict[str, list[int]] = {"high_effect": [], "low_effect": []}
    no_final = 0
    texts: list[str] = []
    owner: list[int] = []
    chosen: list[str] = []
    for conv in convs[: cfg.limit or None]:
        g = group_of(conv, cfg.initial_intensity, cfg.high_final)
        if g is None:
            continue
        if g == "no_final":
            no_final += 1
            continue
        turns = last_seeker_turns(conv, cfg.last_turns)
        texts += turns
        owner += [len(chosen)] * len(turns)
        chosen.append(g)
    probs = predict(texts) if texts else np.zeros((0, len(POSITIVE_MASK)), dtype=np.float32)
    per_turn = positive_counts(probs, thresholds)
    score = np.zeros(len(chosen))
    np.add.at(score, np.asarray(owner, dtype=int), per_turn)
    out: dict[str, Any] = {}
    arrays = {}
    for g in groups:
        arr = score[[i for i, x in enumerate(chosen) if x == g]]
        arrays[g] = arr
        out[g] = {"n": int(len(arr)), "mean_positive_values_last4": float(arr.mean()) if len(arr) else float("nan"),
                  "std": float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"),
                  "share_with_any": float((arr > 0).mean()) if len(arr) else float("nan")}
    out["p_value"] = significance(arrays["high_effect"], arrays["low_effect"], cfg.test)
    out["test"] = "mann-whitney-u (two-sided)" if cfg.test == "mannwhitney" else "welch t (two-sided)"
    out["no_final"] = no_final
    out["last_turns"] = cfg.last_turns
    out["turns_scored"] = len(texts)
    return out


def run(data_dir: str | Path, model_uri: str, cfg: Any) -> dict[str, Any]:
    """Read ESConv from `data_dir`, load the value detector, return the analysis."""
    from tasks.annotators.classifier import load_annotator

    convs = read_dir(data_dir)
    model, th, _, folder = load_annotator(model_uri)
    log.info("ESConv: %d conversations, detector %s", len(convs), folder)
    if getattr(cfg, "presence_threshold", 0.0) > 0:  # sensitivity: one fixed cut instead of the validation thresholds
        th = np.full_like(th, cfg.presence_threshold)
    res = analyse(convs, lambda t: model.predict_proba(t, batch_size=64, max_tokens=8192), th, cfg)
    res["thresholds"] = "thresholds.json" if not getattr(cfg, "presence_threshold", 0.0) else cfg.presence_threshold
    res["n_conversations"] = len(convs)
    return res
