"""Flow of stage `rollouts`: K candidates per sampled training state, continued by the seeker simulator, scored
(data/rollouts/). One cached Prefect task per shard of states (tasks/supporter/rollouts.py)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from prefect import flow

from tasks.annotate import model_version
from tasks.common import paths
from tasks.common.hashing import sha256_file
from tasks.common.io import read_jsonl, write_json, write_jsonl
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.llm.client import BudgetExceeded, open_llm
from tasks.supporter import rollouts

log = logging.getLogger(__name__)


def run_stage(params_file: str | Path = "params.yaml", out_dir: Path | None = None, sim_dir: Path | None = None,
              persona_file: Path | None = None, metrics_file: Path | None = None) -> dict[str, Any]:
    """The stage (the flow and `esvr supporter rollouts` call this)."""
    cfg = stage_params("rollouts", paths.ROOT / params_file)
    rc = cfg.supporter.rollouts
    out_dir = out_dir or paths.ROLLOUTS
    sim_dir = sim_dir or paths.SIMULATED
    persona_file = persona_file or paths.PERSONAS / "train.jsonl"
    train = sim_dir / "train.jsonl"
    if not train.is_file():
        raise rollouts.RolloutError(f"{train}: missing; run `dvc repro simulate`")
    states = rollouts.sample_states(list(read_jsonl(train)), rc, cfg.seed)
    if not states:
        raise rollouts.RolloutError(f"{train}: no supporter turns to roll out")
    llm_params = rollouts.supporter_role(cfg.llm, rc)
    cache = paths.ROOT / cfg.llm.cache_dir
    shards = rollouts.write_shards(states, rc.shard_size, cache / "rollouts" / "shards")
    versions = {"values": model_version(cfg.annotate.value_model), "emotions": model_version(cfg.annotate.emotion_model)}
    log.info("rollouts: %d states in %d shards; %s", len(states), len(shards), rc.model_dump())
    with stage_run("rollouts", cfg.profile, cfg.tracking.experiment,
                   params={"supporter.rollouts": rc.model_dump(), "llm": cfg.llm.model_dump()}):
        import mlflow

        report: dict[str, Any] = {"states": len(states), "shards": len(shards), "shards_cached": 0, "failed": 0,
                                  "stopped_by_budget": False}
        ledger: dict[str, float] = {}
        rows: list[dict[str, Any]] = []
        with open_llm(llm_params, rollouts.ROLES, paths.ROOT, log_dir=cache, served=cfg.serving.adapters) as llm0:
            roles = llm0.roles  # resolved once: the local server's URL and the model fingerprints
            endpoint = {n: dataclasses.asdict(r) for n, r in roles.items()}
            spent = 0.0
            for path, digest in shards:
                opts = {"cache_path": str(llm0.cache.path), "max_concurrency": cfg.llm.max_concurrency,
                        "timeout_s": cfg.llm.timeout_s, "max_retries": cfg.llm.max_retries,
                        "max_reasks": cfg.llm.max_reasks, "budget_usd": max(0.0, cfg.llm.budget_usd - spent),
                        "max_string_chars": cfg.llm.max_string_chars}
                kwargs = dict(shard_path=str(path), shard_hash=digest, personas_path=str(persona_file),
                              personas_hash=sha256_file(persona_file), cfg=rc.model_dump(),
                              roles_fingerprint=rollouts.roles_key(roles), llm_opts=opts,
                              scoring=cfg.annotate.model_dump(), model_versions=versions,
                              progress_dir=str(cache / "rollouts" / "progress"), endpoint=endpoint)
                state = rollouts.rollout_shard(**kwargs, return_state=True)
                res = state.result()
                if state.name == "Cached" and (res["counters"]["failed"] or res["counters"]["stopped_by_budget"]):
                    # a cached shard that lost states is run again: its progress file skips the finished ones
                    state = rollouts.rollout_shard.with_options(refresh_cache=True)(**kwargs, return_state=True)
                    res = state.result()
                c = res["counters"]
                report["shards_cached"] += state.name == "Cached"
                for k, v in res["ledger"].items() if state.name != "Cached" else ():
                    ledger[k] = ledger.get(k, 0.0) + v
                spent = ledger.get("llm.total.cost_usd", 0.0)
                report["failed"] += c["failed"]
                report["stopped_by_budget"] |= c["stopped_by_budget"]
                rows += res["rows"]
                if c["stopped_by_budget"]:
                    break
        report.update(rollouts.summarise(rows, rc))
        report["failed_fraction"] = report["failed"] / len(states)
        report.update(ledger)
        write_jsonl(out_dir / "states.jsonl", [s for s in states if s["state_id"] in {r["state_id"] for r in rows}])
        write_jsonl(out_dir / "candidates.jsonl", rows)
        mlflow.log_metrics({f"rollouts.{k}": float(v) for k, v in report.items() if isinstance(v, int | float)})
        write_json(metrics_file or paths.METRICS / "rollouts.json", report)
        if report["stopped_by_budget"]:
            raise BudgetExceeded(f"rollouts: llm.budget_usd {cfg.llm.budget_usd} reached after "
                                 f"{report['states_done']} states (saved); raise it and re-run")
        if report["failed_fraction"] > rc.max_failed_fraction:
            raise rollouts.RolloutError(f"rollouts: {report['failed']} of {len(states)} states failed (> supporter."
                                        f"rollouts.max_failed_fraction {rc.max_failed_fraction}); see the log")
    return report


@flow(name="rollouts", log_prints=False)
def rollouts_flow(params_file: str = "params.yaml", out_dir: str | None = None, sim_dir: str | None = None,
                  persona_file: str | None = None) -> dict[str, Any]:
    """The stage; the optional folders serve `esvr supporter rollouts` (metrics then go beside the outputs)."""
    out = Path(out_dir) if out_dir else None
    return run_stage(params_file, out, Path(sim_dir) if sim_dir else None,
                     Path(persona_file) if persona_file else None, (out / "report.json") if out else None)
