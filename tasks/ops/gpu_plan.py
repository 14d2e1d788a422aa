"""`esvr gpu plan`: expected GPU hours per stage for the active profile, from measured throughput only.

Rows per stage: the built datasets when they exist (data/datasets/*/train.jsonl), else the profile's
`gpu.expected_examples`. Epochs, batch and lengths: the profile's train groups. Throughput: the newest GPU smoke
reports in benchmarks/results/gpu_smoke_*.json (tokens/s of LoRA SFT and DPO at the paper settings, one H200);
stages no smoke has measured yet say so instead of guessing.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from tasks.common import paths
from tasks.common.config import Params

RESULTS = paths.ROOT / "benchmarks" / "results"
#: docs/training.md's length assumptions: ~400 tokens per SFT example, ~500 per DPO side (capped by max_length).
SFT_TOKENS, DPO_TOKENS_PER_SIDE = 400, 500
DATASET_OF = {"train_tvd": "tvd", "train_rg_sft": "rg_sft", "train_rg_dpo": "rg_pairs"}


def measured(results: Path = RESULTS) -> dict[str, Any]:
    """Median tokens/s of SFT and DPO over the smoke reports, and which files and device they came from."""
    reports = [json.loads(p.read_text()) | {"_file": p.name} for p in sorted(results.glob("gpu_smoke_*.json"))]
    reports = [r for r in reports if r.get("sft_tokens_per_second") and "cpu" not in str(r.get("device", "cpu"))]
    if not reports:
        return {}
    return {"sft_tokens_per_second": statistics.median(r["sft_tokens_per_second"] for r in reports),
            "dpo_tokens_per_second": statistics.median(r["dpo_tokens_per_second"] for r in reports),
            "device": reports[-1]["device"], "model": reports[-1].get("model"),
            "files": [r["_file"] for r in reports]}


def _rows(stage: str, cfg: Params, data: Path) -> tuple[int, str]:
    ds = DATASET_OF.get(stage)
    f = data / "datasets" / ds / "train.jsonl" if ds else None
    if f is not None and f.is_file():
        with open(f, "rb") as fh:
            return sum(1 for _ in fh), str(f.relative_to(data.parent)) if data.parent in f.parents else str(f)
    return int(cfg.gpu.expected_examples.get(stage, 0)), "gpu.expected_examples"


def plan(cfg: Params, data: Path | None = None, results: Path = RESULTS) -> dict[str, Any]:
    """Rows, tokens and GPU hours per training stage (None where unmeasured), with their sources."""
    data = data or paths.DATA
    m = measured(results)
    t = cfg.train
    tr = t.trainer  # TrainingArguments fields (a dict checked against TRL's configs)
    eff_batch = int(tr.get("per_device_train_batch_size", 8)) * int(tr.get("gradient_accumulation_steps", 1))
    max_len = int(tr.get("max_length", 1024))
    stages: dict[str, Any] = {}
    for stage, scfg, kind in (("train_tvd", t.tvd, "sft"), ("train_rg_sft", t.rg_sft, "sft"),
                              ("train_rg_dpo", t.rg_dpo, "dpo")):
        rows, source = _rows(stage, cfg, data)
        a = {**tr, **scfg.args}  # the run's own args over the shared trainer fields
        max_steps, epochs = int(a.get("max_steps", -1)), float(a.get("num_train_epochs", 1.0))
        passes = (max_steps * eff_batch / max(rows, 1)) if max_steps > 0 else epochs
        per_row = min(SFT_TOKENS, max_len) if kind == "sft" else 2 * min(DPO_TOKENS_PER_SIDE, max_len)
        tokens = rows * passes * per_row
        tps = m.get(f"{kind}_tokens_per_second")
        stages[stage] = {"rows": rows, "rows_from": source, "passes": round(passes, 3),
                         "optimizer_steps": math.ceil(rows * passes / eff_batch), "tokens": int(tokens),
                         "gpu_hours": round(tokens / tps / 3600, 3) if tps else None}
    for stage in ("train_value_detector", "train_emotion", "annotate", "simulate"):
        stages[stage] = {"rows": int(cfg.gpu.expected_examples.get(stage, 0)), "rows_from": "gpu.expected_examples",
                         "gpu_hours": None, "why": "no GPU smoke has measured this stage yet (make gpu-smoke)"}
    known = [s["gpu_hours"] for s in stages.values() if s["gpu_hours"] is not None]
    total = round(sum(known), 3) if known else None
    return {"profile": cfg.profile, "throughput": m or None, "stages": stages, "gpu_hours_measured_stages": total,
            "usd_measured_stages": round(total * cfg.gpu.hourly_usd, 2) if total is not None else None}


def table(p: dict[str, Any]) -> str:
    """The plan as a fixed-width table (what `esvr gpu plan` prints)."""
    th = p["throughput"]
    lines = [f"profile {p['profile']}; throughput: " + (
        f"{th['device']}, SFT {th['sft_tokens_per_second']:.0f} tok/s, DPO {th['dpo_tokens_per_second']:.0f} tok/s "
        f"({', '.join(th['files'])})" if th else "none measured (run make gpu-smoke on a GPU worker)"),
        f"{'stage':<22}{'rows':>10}  {'from':<34}{'tokens':>14}{'GPU h':>9}"]
    for name, s in p["stages"].items():
        hours = f"{s['gpu_hours']:.2f}" if s["gpu_hours"] is not None else "n/a"
        lines.append(f"{name:<22}{s['rows']:>10}  {s['rows_from'][:33]:<34}{s.get('tokens', 0):>14}{hours:>9}")
    lines.append(f"measured stages: {p['gpu_hours_measured_stages']} GPU h, ${p['usd_measured_stages']}; n/a stages "
                 "are not estimated")
    return "\n".join(lines)
