"""Measure a sentence-embedding layer behind the crisis guard's lexicon (docs/safety.md: tried, not adopted).

A message the lexicon finds nothing in (no rule, or one weak signal) is flagged when the mean cosine of its MiniLM
embedding to its k nearest crisis lines of dev.jsonl exceeds that to its k nearest non-crisis lines by a margin.
k and the margin are chosen on dev alone by leave-one-out (the highest recall at precision >= 0.95); the held-out
sets only report. Usage: python scripts/guard_embedding_probe.py
"""

from __future__ import annotations

import json
import logging

import numpy as np

from tasks.chat.guard import Guard
from tasks.common import paths
from tasks.common.config import load_profile
from tasks.personas import embed

log = logging.getLogger("guard_embedding_probe")
FIXTURES = paths.ROOT / "tests" / "fixtures" / "guard"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def margins(q: np.ndarray, bank: np.ndarray, y: np.ndarray, k: int, loo: bool) -> np.ndarray:
    s = q @ bank.T
    if loo:
        np.fill_diagonal(s, -1.0)
    near = lambda mask: np.sort(np.where(mask, s, -1.0), axis=1)[:, -k:].mean(1)  # noqa: E731
    return near(y) - near(~y)


def prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    return {"precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3), "fp": fp, "fn": fn}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    guard = Guard.load(load_profile("tiny").guard)
    dev = rows("dev.jsonl")
    bank, y = embed([r["text"] for r in dev]), np.array([r["crisis"] for r in dev])
    best = max(((prf(margins(bank, bank, y, k, True) > m, y), k, float(m))
                for k in (1, 3, 5, 7) for m in np.arange(-0.1, 0.3, 0.01)),
               key=lambda t: (t[0]["precision"] >= 0.95, t[0]["recall"], -t[2]))
    stats, k, m = best
    log.info("chosen on dev (leave-one-out, embedding alone): k %d, margin %.2f, %s", k, m, stats)
    for name in ("test.jsonl", "test_paraphrase.jsonl"):
        rs = rows(name)
        truth = np.array([r["crisis"] for r in rs])
        verdicts = [guard.check(r["text"]) for r in rs]
        lexicon = np.array([v.crisis for v in verdicts])
        open_ = np.array([not v.crisis and (v.rule is None or v.rule.startswith("weak.")) for v in verdicts])
        sem = margins(embed([r["text"] for r in rs]), bank, y, k, False) > m
        log.info("%s: lexicon %s; lexicon + embedding %s", name, prf(lexicon, truth), prf(lexicon | (open_ & sem), truth))


if __name__ == "__main__":
    main()
