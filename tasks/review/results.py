"""`esvr review results`: win rates with intervals and inter-rater agreement from the review page's verdicts.

Per criterion and per matchup of two variants X < Y (names sorted), each verdict scores X 1 (X preferred), ½ (tie)
or 0 (Y preferred). The **win rate** of X is the mean score (ties count half; win/tie/loss shares are reported too).
Its interval is a percentile **cluster bootstrap over pairs**: verdicts of one pair by several raters are not
independent, so pairs (with all their verdicts) are resampled, `review.bootstrap_samples` times, seeded.
**Agreement** is Krippendorff's alpha for nominal data over the labels X / Y / tie, on the pairs judged by two or
more raters (any number of raters per pair; 1 = perfect, 0 = chance, < 0 = systematic disagreement), beside the
raw share of agreeing rater pairs. Formulas and the output format: docs/review.md.

Pure core: `summarise(verdicts, ...)`. Shell: `log_results` (one MLflow run in `review.experiment`).
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tasks.review.pairs import CRITERION_KEYS

log = logging.getLogger(__name__)

RESULTS_VERSION = "review-results-v1"


def _label(v: dict[str, Any], criterion: str) -> str:
    """The verdict as a variant name (or 'tie'), independent of which side it was shown on."""
    c = v[criterion]
    return "tie" if c == "tie" else v["variant_a"] if c == "a" else v["variant_b"]


def bootstrap_ci(pair_sums: np.ndarray, pair_counts: np.ndarray, samples: int, level: float,
                 rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of sum(scores)/count over pairs resampled with replacement."""
    n = len(pair_sums)
    idx = rng.integers(0, n, size=(samples, n))
    stats = pair_sums[idx].sum(axis=1) / pair_counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def win_rates(verdicts: list[dict[str, Any]], criterion: str, samples: int, level: float,
              seed: int) -> list[dict[str, Any]]:
    """One row per matchup of two variants (see the module docstring)."""
    by_matchup: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for v in verdicts:
        x, y = sorted((v["variant_a"], v["variant_b"]))
        lab = _label(v, criterion)
        by_matchup[(x, y)][v["pair_id"]].append(1.0 if lab == x else 0.5 if lab == "tie" else 0.0)
    rows = []
    for (x, y), per_pair in sorted(by_matchup.items()):
        scores = [s for ss in per_pair.values() for s in ss]
        sums = np.array([sum(ss) for ss in per_pair.values()])
        counts = np.array([len(ss) for ss in per_pair.values()], dtype=float)
        rng = np.random.default_rng([seed, len(scores)])  # the same verdicts always give the same interval
        lo, hi = bootstrap_ci(sums, counts, samples, level, rng)
        n = len(scores)
        rows.append({"variant": x, "opponent": y, "verdicts": n, "pairs": len(per_pair),
                     "wins": scores.count(1.0), "ties": scores.count(0.5), "losses": scores.count(0.0),
                     "win_share": scores.count(1.0) / n, "tie_share": scores.count(0.5) / n,
                     "loss_share": scores.count(0.0) / n, "win_rate": sum(scores) / n,
                     "ci_low": lo, "ci_high": hi, "ci_level": level})
    return rows


def krippendorff_alpha_nominal(units: list[list[str]]) -> float | None:
    """Krippendorff's alpha (nominal) over units with >= 2 labels each; None when it is undefined (fewer than two
    pairable labels, or every label the same so that no disagreement is expected)."""
    units = [u for u in units if len(u) >= 2]
    cats = sorted({c for u in units for c in u})
    if not units or len(cats) < 2:
        return None
    k = {c: i for i, c in enumerate(cats)}
    o = np.zeros((len(cats), len(cats)))  # coincidence matrix
    for u in units:
        counts = np.zeros(len(cats))
        for c in u:
            counts[k[c]] += 1
        o += (np.outer(counts, counts) - np.diag(counts)) / (len(u) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    d_o = o.sum() - np.trace(o)
    d_e = (n_c.sum() ** 2 - (n_c ** 2).sum()) / (n - 1)
    if d_e == 0:
        return None
    return float(1.0 - d_o / d_e)


def agreement(verdicts: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    units: dict[str, list[str]] = defaultdict(list)
    for v in verdicts:
        units[v["pair_id"]].append(_label(v, criterion))
    multi = [u for u in units.values() if len(u) >= 2]
    agree = total = 0
    for u in multi:
        for i in range(len(u)):
            for j in range(i + 1, len(u)):
                agree += u[i] == u[j]
                total += 1
    return {"alpha": krippendorff_alpha_nominal(multi), "percent_agreement": (agree / total) if total else None,
            "pairs_with_2plus_raters": len(multi), "rater_pairs": total}


def summarise(verdicts: list[dict[str, Any]], samples: int, level: float, seed: int) -> dict[str, Any]:
    """Everything `esvr review results` reports, as one JSON-able dict (format in docs/review.md)."""
    return {
        "version": RESULTS_VERSION,
        "verdicts": len(verdicts),
        "raters": len({v["rater_id"] for v in verdicts}),
        "pairs_judged": len({v["pair_id"] for v in verdicts}),
        "criteria": {c: {"matchups": win_rates(verdicts, c, samples, level, seed), "agreement": agreement(verdicts, c)}
                     for c in CRITERION_KEYS},
    }


def _key(*parts: str) -> str:
    """An MLflow metric key (letters, digits, _ - . / and spaces only)."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-/ ]", "_", p) for p in parts)


def metrics_of(summary: dict[str, Any]) -> dict[str, float]:
    m = {"review.verdicts": float(summary["verdicts"]), "review.raters": float(summary["raters"]),
         "review.pairs_judged": float(summary["pairs_judged"])}
    for c, block in summary["criteria"].items():
        for row in block["matchups"]:
            base = ("review", c, f"{row['variant']}_vs_{row['opponent']}")
            for k in ("win_rate", "ci_low", "ci_high", "win_share", "tie_share", "loss_share", "verdicts", "pairs"):
                m[_key(*base, k)] = float(row[k])
        for k in ("alpha", "percent_agreement"):
            if block["agreement"][k] is not None:
                m[_key("review", c, k)] = float(block["agreement"][k])
    return m


def log_results(summary: dict[str, Any], verdicts: list[dict[str, Any]], experiment: str, profile: str,
                params: dict[str, Any], db_path: Path) -> str:
    """One MLflow run in `experiment` with the metrics and results.json + verdicts.jsonl; returns the run id."""
    import tempfile

    import mlflow

    from tasks.common import tracking

    with tracking.stage_run("review_results", profile, experiment=experiment, params=params) as run:
        mlflow.set_tag("review.db", str(db_path))
        mlflow.log_metrics(metrics_of(summary))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
            with open(Path(tmp) / "verdicts.jsonl", "w", encoding="utf-8") as f:
                for v in verdicts:
                    f.write(json.dumps(v, ensure_ascii=False) + "\n")
            mlflow.log_artifacts(tmp, "review")
        log.info("review results logged to MLflow run %s (experiment %s)", run.info.run_id, experiment)
        return str(run.info.run_id)
