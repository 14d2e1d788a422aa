"""Live crawler on praw: the newest submissions of a subreddit with their comment trees, incremental and resumable.

* Credentials only from the environment (or .env, loaded by the CLI): REDDIT_CLIENT_ID, REDDIT_CLIENT_SECRET.
  ESVR_REDDIT_OAUTH_URL / ESVR_REDDIT_URL point praw elsewhere (the loopback server of the tests, a proxy).
* State folder: raw/<submission id>.jsonl (one file per finished submission, records already pseudonymised,
  written atomically) and checkpoint.json (newest timestamp/id seen, watermark of the last *complete* run).
  A killed run leaves only whole files; the next run skips them and finishes the rest, so the store built from
  the folder is identical to an uninterrupted run's.
* Incremental: a run stops at submissions not newer than the previous complete run's newest one.
* Bounded `replace_more(limit=...)`; Reddit's rate limits are respected by prawcore (it sleeps according to the
  x-ratelimit-* headers of every answer); transient failures surface as exceptions that the Prefect task retries.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tasks.common.config import CrawlLiveParams
from tasks.common.io import read_json, read_jsonl, write_json, write_jsonl
from tasks.crawl.records import (
    CrawlError,
    Pseudonymiser,
    ThreadRules,
    normalise_comment,
    normalise_submission,
    pseudonymise_record,
)

log = logging.getLogger(__name__)

ENV_ID, ENV_SECRET = "REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET"
ENV_OAUTH_URL, ENV_URL = "ESVR_REDDIT_OAUTH_URL", "ESVR_REDDIT_URL"


def make_reddit(lv: CrawlLiveParams) -> Any:
    """A read-only praw client from env credentials; never logs them."""
    import praw

    cid, secret = os.environ.get(ENV_ID, ""), os.environ.get(ENV_SECRET, "")
    if not cid or not secret:
        raise CrawlError(
            f"live crawl needs {ENV_ID} and {ENV_SECRET} in the environment or in .env (a Reddit 'script' app: "
            "https://www.reddit.com/prefs/apps); they are never read from params.yaml"
        )
    kwargs: dict[str, Any] = dict(client_id=cid, client_secret=secret, user_agent=lv.user_agent,
                                  check_for_updates=False, check_for_async=False, timeout=int(lv.timeout_s),
                                  ratelimit_seconds=lv.ratelimit_seconds)
    if os.environ.get(ENV_OAUTH_URL):
        kwargs["oauth_url"] = os.environ[ENV_OAUTH_URL]
    if os.environ.get(ENV_URL):
        kwargs["reddit_url"] = os.environ[ENV_URL]
    return praw.Reddit(**kwargs)


def _name(author: Any) -> str:
    return "[deleted]" if author is None else str(getattr(author, "name", author))


def submission_dict(s: Any) -> dict[str, Any]:
    """praw Submission -> the dump-shaped dict that normalise_submission reads."""
    return {"id": s.id, "subreddit": str(s.subreddit), "author": _name(s.author), "created_utc": s.created_utc,
            "title": s.title, "selftext": s.selftext}


def comment_dict(c: Any) -> dict[str, Any]:
    return {"id": c.id, "link_id": c.link_id, "parent_id": c.parent_id, "subreddit": str(c.subreddit),
            "author": _name(c.author), "created_utc": c.created_utc, "body": c.body}


def crawl(lv: CrawlLiveParams, state_dir: Path, pseudo: Pseudonymiser, rules: ThreadRules,
          reddit: Any = None) -> dict[str, int]:
    """Visit up to `max_submissions` newest submissions not yet crawled; returns counters of this run."""
    state_dir = Path(state_dir)
    raw = state_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    ck_path = state_dir / "checkpoint.json"
    ck = read_json(ck_path) if ck_path.is_file() else {}
    if ck and ck.get("subreddit", "").lower() != lv.subreddit.lower():
        raise CrawlError(f"{ck_path}: state of r/{ck.get('subreddit')}, not r/{lv.subreddit}; use another state dir")
    watermark = ck.get("complete_newest_utc")  # everything not newer was covered by a complete earlier run
    reddit = reddit or make_reddit(lv)
    stats: Counter = Counter()
    newest = ck.get("newest_utc")
    newest_id = ck.get("newest_id")
    run_newest: float | None = None
    complete = False  # reached the watermark or the end of the listing: the watermark may advance
    t0 = time.monotonic()
    for s in reddit.subreddit(lv.subreddit).new(limit=None):
        created = float(s.created_utc)
        if watermark is not None and created <= watermark:
            complete = True
            break
        run_newest = created if run_newest is None else max(run_newest, created)
        target = raw / f"{s.id}.jsonl"
        if target.is_file():
            stats["already_crawled"] += 1
            continue
        if stats["submissions"] >= lv.max_submissions:
            break  # budget spent: the next run resumes below the files already written
        s.comment_sort = "old"
        skipped = s.comments.replace_more(limit=lv.replace_more_limit, threshold=lv.replace_more_threshold)
        stats["more_left_unexpanded"] += len(skipped)
        recs = [normalise_submission(submission_dict(s))]
        recs += [normalise_comment(comment_dict(c)) for c in s.comments.list()]
        recs = [pseudonymise_record(r, pseudo, rules) for r in recs if r is not None]
        write_jsonl(target, recs)  # atomic: a kill leaves no partial submission
        stats["submissions"] += 1
        stats["comments"] += len(recs) - 1
        if newest is None or created > newest:
            newest, newest_id = created, s.id
        write_json(ck_path, {**ck, "subreddit": lv.subreddit, "newest_utc": newest, "newest_id": newest_id})
        log.info("live r/%s: %d new submissions (%.1f s)", lv.subreddit, stats["submissions"], time.monotonic() - t0)
    else:
        complete = True
    if complete and run_newest is not None:
        watermark = run_newest if watermark is None else max(watermark, run_newest)
    final = {"subreddit": lv.subreddit, "newest_utc": newest, "newest_id": newest_id,
             "complete_newest_utc": watermark}
    write_json(ck_path, final)
    log.info("live r/%s done: %s", lv.subreddit, dict(stats))
    return dict(stats)


def live_part(state_dir: Path) -> tuple[str, list[dict[str, Any]], Counter]:
    """All crawled submissions of a state folder as a `tasks.crawl.crawl.finish` input (file order is irrelevant)."""
    recs: list[dict[str, Any]] = []
    for f in sorted((Path(state_dir) / "raw").glob("*.jsonl")):
        recs.extend(read_jsonl(f))
    c: Counter = Counter()
    c["submissions_read"] = sum(r["kind"] == "s" for r in recs)
    c["comments_read"] = len(recs) - c["submissions_read"]
    c["live_files"] = 1
    return "live", recs, c
