"""Stage `crawl_live`: the live praw crawl into a DVC-tracked input, `data/live/` (crawl reads it).

The scheduled deployment re-runs it every night (`refresh: [crawl_live]` in prefect.yaml; a plain `dvc repro`
leaves it alone when nothing changed) and DVC keeps its folder between runs (`persist`), so the nightly pipeline
asks Reddit only for what is newer than the watermark in `data/live/checkpoint.json` (tasks/crawl/reddit_live.py);
when nothing new came, the folder's hash is unchanged and DVC skips `crawl` and everything downstream. With
`crawl.live.enabled: false` (tiny profile) the stage writes only `watermark.json` saying so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.common import paths
from tasks.common.config import CrawlParams
from tasks.common.io import read_json, write_json
from tasks.crawl import crawl, records, reddit_live

log = logging.getLogger(__name__)

def live_dir() -> Path:
    """Where the live crawl's DVC-tracked state lives (the stage's DVC out; read by stage crawl); crawl.live.state_dir
    must name it."""
    return paths.LIVE


def run(cfg: CrawlParams, state_dir: Path, pseudo: records.Pseudonymiser | None) -> dict[str, Any]:
    """Crawl what is new into `state_dir` (when enabled); write its watermark.json; return the counters."""
    lv = cfg.live
    stats: dict[str, Any] = {}
    if lv.enabled:
        if pseudo is None:
            raise records.CrawlError("crawl_live: the live crawl needs the pseudonymiser (ESVR_PSEUDONYM_KEY)")
        stats = reddit_live.crawl(lv, state_dir, pseudo, crawl.rules_from(cfg))
    ck = state_dir / "checkpoint.json"
    mark = {"enabled": bool(lv.enabled), "subreddit": lv.subreddit,
            "complete_newest_utc": read_json(ck).get("complete_newest_utc") if ck.is_file() else None,
            "submissions": len(list((state_dir / "raw").glob("*.jsonl"))) if (state_dir / "raw").is_dir() else 0}
    write_json(state_dir / "watermark.json", mark)  # no wall times: equal crawls give an equal folder hash
    log.info("crawl_live: %s (this run: %s)", mark, stats)
    return {**mark, **{f"run.{k}": v for k, v in stats.items()}}
