"""Flow of stage `crawl`: one cached task per input file (key: file hash + crawl params + key fingerprint), a
retried task for the live crawl, then thread building into data/threads/ (DVC out) and metrics/crawl.json."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import flow, task

from tasks.common import paths
from tasks.common.hashing import sha256_file
from tasks.common.io import write_json
from tasks.common.orchestration import shard_task, stage_params
from tasks.common.tracking import stage_run
from tasks.crawl import crawl, records

log = logging.getLogger(__name__)


def _pseudo(g: dict[str, Any], seed: int) -> records.Pseudonymiser:
    return records.pseudonymiser_from_env(g["pseudonym_fallback"], seed)


@shard_task(name="crawl-table")
def read_table_file(path: str, sha256: str, g: dict, seed: int, key_fingerprint: str, cache_version: str):
    """One thread table -> pseudonymised records (the cache key covers the file hash, params and key)."""
    return crawl.table_part(Path(path), g["subreddit"], _pseudo(g, seed), crawl.rules_from(g))


@shard_task(name="crawl-dump")
def read_dump_file(path: str, sha256: str, g: dict, seed: int, key_fingerprint: str, cache_version: str):
    """One Pushshift dump -> pseudonymised, filtered records (parsed on `g["workers"]` processes)."""
    return crawl.dump_part(Path(path), g, _pseudo(g, seed))


def live_task(retries: int, delay: float):
    """The live crawl as a retried task: each retry resumes from the checkpoint in the state folder."""

    @task(name="crawl-live", retries=retries, retry_delay_seconds=delay)
    def crawl_live(lv: dict, state_dir: str, g: dict, seed: int):
        from tasks.crawl import reddit_live

        reddit_live.crawl(lv, Path(state_dir), _pseudo(g, seed), crawl.rules_from(g))
        return reddit_live.live_part(Path(state_dir))

    return crawl_live


@flow(name="crawl", log_prints=False)
def crawl_flow(params_file: str = "params.yaml") -> dict:
    cfg = stage_params("crawl", paths.ROOT / params_file)
    g = cfg.crawl.model_dump()
    log.info("crawl: %s", g)
    with stage_run("crawl", cfg.profile, cfg.tracking.experiment, params=g) as _:
        import mlflow

        pseudo = _pseudo(g, cfg.seed)  # fails fast (before any reading) when no key is allowed
        parts: list[tuple[str, list, Counter]] = []
        for rel in g["tables"]:
            p = paths.EXTERNAL / rel
            _need(p, rel)
            parts.append(read_table_file(str(p), sha256_file(p), g, cfg.seed, pseudo.fingerprint, crawl.CACHE_VERSION))
        for rel in g["dumps"]:
            p = paths.EXTERNAL / rel
            _need(p, rel)
            parts.append(read_dump_file(str(p), sha256_file(p), g, cfg.seed, pseudo.fingerprint, crawl.CACHE_VERSION))
        if g["live"]["enabled"]:
            lv = g["live"]
            parts.append(live_task(lv["retries"], lv["retry_delay_s"])(lv, str(paths.ROOT / lv["state_dir"]), g, cfg.seed))
        threads, stats = crawl.finish(parts, crawl.rules_from(g), g["max_threads"])
        final = crawl.write_store(threads, stats, paths.THREADS, g["shards"])
        mlflow.log_metrics({f"crawl.{k}": v for k, v in final.items()})
        write_json(paths.METRICS / "crawl.json", final)
    return {k: final[k] for k in crawl.STATS_KEYS}


def _need(p: Path, rel: str) -> None:
    if not p.is_file():
        raise records.CrawlError(f"{p}: crawl input {rel!r} (params crawl.tables/dumps) is missing; run `dvc repro sources` "
                               "or `esvr data fetch` first")
