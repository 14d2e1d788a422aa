"""`esvr evaluate dialogues`: score a JSONL file of contract dialogues (real or simulated) with the evaluation's
metrics — Seeker-/Supporter-Value through the value detector's presence rule, the final intensity, adoption and
strategies where recorded — and, with `--judge`, the LLM judge of params. The output is
`{"dialogues": [per-dialogue rows], "means": {...}}` (docs/CONTRACTS.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from tasks.evaluate import metrics


def read_dialogues(path: str | Path) -> list[dict[str, Any]]:
    """Contract dialogues from JSONL; a malformed line or a bad key raises ValueError naming file, line and key."""
    out, seen = [], set()
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{i}"
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise metrics.DialogueError(f"{where}: malformed JSON line: {e}") from None
            metrics.validate_dialogue(obj, where)
            if obj["id"] in seen:
                raise metrics.DialogueError(f"{where}: id {obj['id']!r} appears twice")
            seen.add(obj["id"])
            out.append(obj)
    if not out:
        raise metrics.DialogueError(f"{path}: no dialogues")
    return out


def judge_dialogues(dialogues: list[dict[str, Any]], cfg: Any) -> list[dict[str, dict[str, Any]]]:
    """The params' judge on every dialogue (cache, retries, ledger: tasks/llm/client.py)."""
    from tasks.common import paths
    from tasks.evaluate.judge import judge_all
    from tasks.llm.client import open_llm

    role = cfg.evaluate.judge.role
    with open_llm(cfg.llm, [role], paths.ROOT, log_dir=paths.ROOT / cfg.llm.cache_dir) as llm:
        async def work() -> list[dict[str, dict[str, Any]]]:
            try:
                return await judge_all(llm, role, dialogues, dict(cfg.evaluate.judge.dimensions))
            finally:
                await llm.aclose()

        return asyncio.run(work())


def score_file(path: str | Path, cfg: Any, value_detector: str, judge: bool) -> dict[str, Any]:
    """Read, score (and judge) the dialogues of `path`; `cfg` is the validated Params."""
    from tasks.annotators.presence import load_detector

    dialogues = read_dialogues(path)
    detector = load_detector(value_detector)
    rows = metrics.score_dialogues(dialogues, detector.present)
    keys = list(metrics.MEAN_KEYS)
    if judge:
        for row, verdict in zip(rows, judge_dialogues(dialogues, cfg), strict=True):
            row["judge"] = verdict
            row.update({dim: v["score"] for dim, v in verdict.items()})
        keys += list(cfg.evaluate.judge.dimensions)
    means = metrics.summarise(rows, keys)
    means["intensity"] = means["final_intensity"]  # the MLflow metric's name for the same mean
    return {"dialogues": rows, "means": means}
