"""Flow of stage `crawl`: one cached task per input file (key: file hash + crawl params + key fingerprint), a
the live crawl's records from data/live/ (stage crawl_live), then thread building into data/threads/ (DVC out) and metrics/crawl.json."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from prefect import flow

from tasks.common import paths
from tasks.common.config import CrawlParams
from tasks.common.hashing import sha256_file
from tasks.common.io import write_json
from tasks.common.orchestration import map_shards, runner_params, shard_task, stage_params
from tasks.common.tracking import stage_run
from tasks.crawl import crawl, crawl_live, records, reddit_live

log = logging.getLogger(__name__)


def _pseudo(cfg: CrawlParams, seed: int) -> records.Pseudonymiser:
    return records.pseudonymiser_from_env(cfg.pseudonym_fallback, seed)


@shard_task(name="crawl-table")
def read_table_file(path: str, sha256: str, cfg: CrawlParams, seed: int, key_fingerprint: str, cache_version: str):
    """One thread table -> pseudonymised records (the cache key covers the file hash, params and key)."""
    return crawl.table_part(Path(path), cfg.subreddit, _pseudo(cfg, seed), crawl.rules_from(cfg))


@shard_task(name="crawl-dump")
def read_dump_file(path: str, sha256: str, cfg: CrawlParams, seed: int, key_fingerprint: str, cache_version: str):
    """One Pushshift dump -> pseudonymised, filtered records (parsed on `crawl.workers` processes)."""
    return crawl.dump_part(Path(path), cfg, _pseudo(cfg, seed))


@flow(name="crawl", log_prints=False)
def crawl_flow(params_file: str = "params.yaml") -> dict:
    params = stage_params("crawl", paths.ROOT / params_file)
    cfg = params.crawl
    log.info("crawl: %s", cfg.model_dump())
    with stage_run("crawl", params.profile, params.tracking.experiment, params={"crawl": cfg}) as _:
        import mlflow

        pseudo = _pseudo(cfg, params.seed)  # fails fast (before any reading) when no key is allowed
        parts: list[tuple[str, list, Counter]] = []
        # One cached task per input file, spread over the configured runner (threads, Dask or Ray); results come
        # back in input order, so the thread store does not depend on where a file was read.
        runner = runner_params(paths.ROOT / params_file)
        for task_fn, files in ((read_table_file, cfg.tables), (read_dump_file, cfg.dumps)):
            calls = []
            for rel in files:
                p = paths.EXTERNAL / rel
                _need(p, rel)
                calls.append({"path": str(p), "sha256": sha256_file(p), "cfg": cfg, "seed": params.seed,
                              "key_fingerprint": pseudo.fingerprint, "cache_version": crawl.CACHE_VERSION})
            parts += [state.result() for state in map_shards(task_fn, calls, runner)]
        live = crawl_live.live_dir()  # stage crawl_live's DVC out: what the live crawl has collected
        if (live / "raw").is_dir() and any((live / "raw").glob("*.jsonl")):
            parts.append(reddit_live.live_part(live))
        threads, stats = crawl.finish(parts, crawl.rules_from(cfg), cfg.max_threads)
        final = crawl.write_store(threads, stats, paths.THREADS, cfg.shards)
        mlflow.log_metrics({f"crawl.{k}": v for k, v in final.items()})
        write_json(paths.METRICS / "crawl.json", final)
    return {k: final[k] for k in crawl.STATS_KEYS}


def _need(p: Path, rel: str) -> None:
    if not p.is_file():
        raise records.CrawlError(f"{p}: crawl input {rel!r} (params crawl.tables/dumps) is missing; run `dvc repro sources` "
                               "or `esvr data fetch` first")
