"""Flow of stage `evaluate`: supporter variants on the eval personas, the human ESConv row, judge, metrics,
statistics; one MLflow run per variant in experiment `evaluate.experiment` (data/evaluation/,
metrics/evaluate.json)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from prefect import flow

from tasks.common import paths, tracking
from tasks.common.io import read_jsonl, write_json, write_jsonl
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.evaluate import evaluate, human, planner, runs
from tasks.llm.client import BudgetExceeded, open_llm

log = logging.getLogger(__name__)


def run_stage(params_file: str | Path = "params.yaml", out_dir: Path | None = None,
              persona_file: Path | None = None, metrics_file: Path | None = None) -> dict[str, Any]:
    """The stage without Prefect (the flow and `esvr evaluate run` call this)."""
    cfg = stage_params("evaluate", paths.ROOT / params_file)
    ev = cfg.evaluate
    out_dir = out_dir or paths.EVALUATION
    persona_file = persona_file or paths.PERSONAS / "eval.jsonl"
    personas = sorted(read_jsonl(persona_file), key=lambda p: p["id"])[: ev.personas or None]
    log.info("evaluate: %s (%d eval personas from %s)", ev.model_dump(), len(personas), persona_file)
    esconv = paths.EXTERNAL / "esconv"
    with stage_run("evaluate", cfg.profile, cfg.tracking.experiment,
                   params={"evaluate": ev.model_dump(), "llm": cfg.llm.model_dump()}) as stage:
        import mlflow

        active, skipped, local, fps = evaluate.plan_variants(ev)
        strategy_planner, planner_report = None, dict[str, float]()
        if any(v.kind == "planner" for v in active.values()):
            train = human.human_dialogues(esconv, "train", ev.planner.limit_train)
            valid = human.human_dialogues(esconv, "valid", 0)
            strategy_planner, planner_report = planner.fit(train, valid, ev.planner.context_turns,
                                                           ev.planner.max_features, ev.planner.c, cfg.seed)
        humans = human.human_dialogues(esconv, ev.human.split, ev.human.limit)
        used = {v.endpoint for v in active.values() if v.endpoint} | ({ev.judge.second} if ev.judge.second else set())
        cache = paths.ROOT / cfg.llm.cache_dir
        from tasks.annotators.presence import load_detector

        detector = load_detector(ev.value_detector)
        with open_llm(cfg.llm, evaluate.ROLES, paths.ROOT, log_dir=cache, served=cfg.serving.adapters,
                      extra_roles={e: ev.endpoints[e] for e in sorted(used)}, extra_models=local) as llm:
            report = evaluate.run(llm, evaluate.policies_for(active, strategy_planner), personas, humans,
                                  detector.present, ev, cfg.seed, cache / "progress")
            ledger = llm.ledger.metrics()
            judge_model = {r: llm.roles[r].model for r in (ev.judge.role, ev.judge.second) if r}
        write_jsonl(out_dir / "pairs.jsonl", evaluate.review_pairs(report["dialogues"], ev.baseline))  # review page
        for name, ds in report["dialogues"].items():
            write_jsonl(out_dir / f"{name}.jsonl", [{**d, "scores": r} for d, r in
                                                   zip(ds, report["scored"][name], strict=True)])
        variants = {n: {**v.model_dump(), "fingerprint": fps.get(n, "")} for n, v in active.items()}
        variants[evaluate.HUMAN] = {"kind": "human", "target_values": False, "reference": False,
                                    "model": f"ESConv {ev.human.split}", "endpoint": None, "paper_row": None,
                                    "tables": ["main"], "fingerprint": ""}
        common = {"turns": ev.turns, "personas": len(personas), "seed": cfg.seed, "baseline": ev.baseline,
                  "judge.model": judge_model.get(ev.judge.role),
                  "judge.second": judge_model.get(ev.judge.second or ""),
                  **{f"planner.{k}": v for k, v in planner_report.items()}}
        tags = {"esvr.profile": cfg.profile, "git.sha": tracking.git_sha(), "esvr.stage_run": stage.info.run_id}
        run_ids = runs.log_variant_runs(report, variants, ev.experiment, stage.info.run_id, common, tags)
        summary: dict[str, Any] = {
            "batch": stage.info.run_id, "experiment": ev.experiment, "run_ids": run_ids, "skipped": skipped,
            "personas": len(personas), "turns": ev.turns, "planner": planner_report,
            "kappa": report["kappa"], "wall_s": report["wall_s"],
            "variants": {v: {m: e["mean"] for m, e in est.items() if not m.endswith(".diff")}
                         for v, est in report["estimates"].items()},
            "counters": report["counters"], **{k: v for k, v in ledger.items() if k.startswith("llm.total.")}}
        write_json(out_dir / "summary.json", {**summary, "estimates": report["estimates"],
                                              "pairwise": {v: p["rates"] for v, p in report["pairwise"].items()}})
        write_json(metrics_file or paths.METRICS / "evaluate.json", summary)
        mlflow.log_metrics({k: float(v) for k, v in ledger.items()})
        runs.log_stage_summary(report, planner_report, skipped, run_ids)
        if os.environ.get("DVC_STAGE"):  # the same hash stage_run puts on this run, on every variant run too
            entry = tracking.current_lock_entry("evaluate")
            runs.tag_runs(run_ids, runs.LOCK_TAG, tracking.lock_entry_hash(entry) if entry else "unavailable")
        failed = {v: c for v, c in report["counters"].items() if c["failed_fraction"] > ev.max_failed_fraction}
        if any(c["stopped_by_budget"] for c in report["counters"].values()):
            raise BudgetExceeded(f"evaluate: llm.budget_usd {cfg.llm.budget_usd} reached (finished dialogues are "
                                 "saved); raise it and re-run — nothing finished is redone")
        if failed:
            raise RuntimeError(f"evaluate: variants {sorted(failed)} lost more than evaluate.max_failed_fraction "
                               f"{ev.max_failed_fraction} of their dialogues; see the log")
    return summary


@flow(name="evaluate", log_prints=False)
def evaluate_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    return run_stage(params_file)
