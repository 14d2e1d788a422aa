"""ESConv analysis (the paper's motivation): do seekers whose distress fell the most voice more positive values at the
end of the conversation?

Groups, among conversations whose seeker reported initial emotion intensity 5 (`initial_intensity`):
high_effect = final intensity in `high_final` (1-2); low_effect = any other reported final intensity (3-5).
Conversations without a final score (about 150 of 1,300) have no outcome and are left out (counted as `no_final`).
Score per conversation: the number of (turn, category) pairs of a *positive* value (tasks.domain.taxonomy.POSITIVE_VALUES)
present in the last `last_turns` seeker turns, presence decided by the value detector's presence rule
(tasks/annotators/presence.py: its presence.json; `presence_threshold` > 0 replaces the cuts by one fixed number as a
sensitivity check, keeping the rule's text-length floor). Each group's mean comes with a seeded percentile-bootstrap
95 % interval (`bootstrap` resamples), as does the difference of the means; the paper's 7.9 vs 6.5 (ES-VR, §3, measured
with the Schroter et al. 2023 detector at its own cut) stand beside them. The groups are compared with a two-sided
Mann-Whitney U test (counts are small integers, far from normal) or Welch's t-test.

Pure core: `group_of()`, `analyse()`; I/O shell: `run()`. ESConv's file format: tasks/domain/esconv.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.common.config import EsconvAnalysisParams
from tasks.domain.esconv import SEEKER, intensities, read_dir, seeker_turns
from tasks.domain.taxonomy import POSITIVE_MASK

log = logging.getLogger(__name__)

__all__ = ["SEEKER", "analyse", "group_of", "intensities", "last_seeker_turns", "read_dir", "run"]

#: ES-VR §3: mean positive values in the last 4 seeker turns, high- vs low-effect group.
PAPER = {"high_effect": 7.9, "low_effect": 6.5}
GROUPS = ("high_effect", "low_effect")


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
    return seeker_turns(conv)[-k:]


def significance(a: np.ndarray, b: np.ndarray, test: str) -> float:
    """Two-sided p-value of the difference between the two groups (nan when a group is empty)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if test == "welch":
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def bootstrap_ci(a: np.ndarray, b: np.ndarray | None, n: int, seed: int) -> list[float]:
    """95 % percentile-bootstrap interval of mean(a) (or of mean(a) - mean(b)); [nan, nan] when a group is empty."""
    if len(a) == 0 or (b is not None and len(b) == 0) or n <= 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = rng.choice(a, (n, len(a))).mean(1)
    if b is not None:
        means = means - rng.choice(b, (n, len(b))).mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def analyse(convs: list[dict[str, Any]], present: Callable[[list[str]], np.ndarray], cfg: EsconvAnalysisParams,
            seed: int = 0) -> dict[str, Any]:
    """Group the conversations, mark the values present in each one's last seeker turns with `present(texts) ->
    bool (n, 20)`, compare the groups (positive values; all values beside them)."""
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
    mask = present(texts) if texts else np.zeros((0, len(POSITIVE_MASK)), dtype=bool)
    positive = (mask & np.asarray(POSITIVE_MASK)).sum(1)
    score, score_all = np.zeros(len(chosen)), np.zeros(len(chosen))
    np.add.at(score, np.asarray(owner, dtype=int), positive)
    np.add.at(score_all, np.asarray(owner, dtype=int), mask.sum(1))
    n_boot = int(cfg.bootstrap)
    out: dict[str, Any] = {}
    arrays = {}
    for i, g in enumerate(GROUPS):
        idx = [j for j, x in enumerate(chosen) if x == g]
        arr = score[idx]
        arrays[g] = arr
        out[g] = {"n": int(len(arr)), "mean_positive_values_last4": float(arr.mean()) if len(arr) else float("nan"),
                  "ci95": bootstrap_ci(arr, None, n_boot, seed + i),
                  "std": float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"),
                  "share_with_any": float((arr > 0).mean()) if len(arr) else float("nan"),
                  "mean_values_last4": float(score_all[idx].mean()) if idx else float("nan"),
                  "paper_mean_positive_values_last4": PAPER[g]}
    out["difference"] = {"mean": out["high_effect"]["mean_positive_values_last4"]
                         - out["low_effect"]["mean_positive_values_last4"],
                         "ci95": bootstrap_ci(arrays["high_effect"], arrays["low_effect"], n_boot, seed + 7),
                         "paper": PAPER["high_effect"] - PAPER["low_effect"]}
    out["p_value"] = significance(arrays["high_effect"], arrays["low_effect"], cfg.test)
    out["test"] = "mann-whitney-u (two-sided)" if cfg.test == "mannwhitney" else "welch t (two-sided)"
    out["no_final"] = no_final
    out["last_turns"] = cfg.last_turns
    out["turns_scored"] = len(texts)
    out["values_per_turn"] = float(mask.sum(1).mean()) if len(mask) else float("nan")
    out["positive_values_per_turn"] = float(positive.mean()) if len(positive) else float("nan")
    out["share_turns_without_value"] = float((~mask.any(1)).mean()) if len(mask) else float("nan")
    return out


def presence_of(detector: Any, threshold: float = 0.0) -> Callable[[Sequence[str]], np.ndarray]:
    """`present(texts)` of a ValueDetector: its own rule, or one fixed cut (keeping the rule's length floor)."""
    from tasks.annotators.presence import PresenceRule

    rule = detector.rule if not threshold else PresenceRule.uniform(threshold, detector.rule.min_chars)

    def present(texts: Sequence[str]) -> np.ndarray:
        return rule.present(list(texts), detector.probs(list(texts)))

    return present


def run(data_dir: str | Path, model_uri: str, cfg: EsconvAnalysisParams, seed: int = 0) -> dict[str, Any]:
    """Read ESConv from `data_dir`, load the value detector with its presence rule, return the analysis."""
    from tasks.annotators.presence import load_detector

    convs = read_dir(data_dir)
    detector = load_detector(model_uri)
    log.info("ESConv: %d conversations, detector %s", len(convs), model_uri)
    res = analyse(convs, presence_of(detector, cfg.presence_threshold), cfg, seed)
    res["presence"] = "presence.json" if not cfg.presence_threshold else f"uniform {cfg.presence_threshold}"
    res["n_conversations"] = len(convs)
    return res
