"""Stage `crawl`: Reddit submissions + comments (Pushshift dumps, thread tables, live praw) -> one pseudonymised,
de-duplicated thread store under data/threads/ (format: docs/CONTRACTS.md "crawl -> data/threads/").

Pure core: `Pseudonymiser`, `normalise_submission/comment` (over `submission_record/comment_record`), `build_threads`, `shard_threads`, `parse_thread_table`.
I/O shell: `read_table`, `write_store`, `run`. The dump reader is tasks/crawl/pushshift.py, the live crawler
tasks/crawl/reddit_live.py, the Prefect flow flows/crawl.py.

Privacy: every author name passes through `Pseudonymiser` (keyed HMAC) before a record leaves the reader that
produced it, so no raw username reaches a file, a Prefect result, a log line or MLflow.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.common.config import CrawlParams
from tasks.common.hashing import content_id
from tasks.crawl import pushshift, reddit_live
from tasks.crawl.records import DELETED, CrawlError, Pseudonymiser, ThreadRules, pseudonymise_record, strip_prefix

log = logging.getLogger(__name__)

#: Bump when the thread/record logic changes in a way the task source hash would not show (helpers, formats).
CACHE_VERSION = "crawl-v1"

SOURCE_PRIORITY = {"dump": 0, "table": 1, "live": 2}  # archived copies first: live text may since be edited/removed


def is_deleted(rec: dict[str, Any]) -> bool:
    return rec["author"] in DELETED or rec["text"].strip() in DELETED or (
        rec["kind"] == "s" and rec.get("title", "").strip() in DELETED
    )


def _sort_key(rec: dict[str, Any]) -> tuple[int, int, str]:
    """Chronological when timestamps exist, else by base-36 id (Reddit ids grow with time): input-order free."""
    t = rec.get("created_utc")
    try:
        n = int(rec["id"], 36)
    except ValueError:
        n = 0
    return (t if t is not None else -1, n, rec["id"])


def build_threads(
    records: Iterable[tuple[str, dict[str, Any]]], rules: ThreadRules
) -> tuple[list[dict[str, Any]], Counter]:
    """(source, pseudonymised record) pairs -> contract threads, sorted by thread_id, and drop counters."""
    stats: Counter = Counter()
    subs: dict[str, tuple[int, str, dict[str, Any]]] = {}
    comments: dict[str, tuple[int, str, dict[str, Any]]] = {}
    for source, rec in records:
        prio = SOURCE_PRIORITY[source]
        table = subs if rec["kind"] == "s" else comments
        prev = table.get(rec["id"])
        if prev is not None:
            stats["duplicates_dropped"] += 1
            if prev[0] <= prio:
                continue
        table[rec["id"]] = (prio, source, rec)

    by_link: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, _, c in comments.values():
        by_link[c["link_id"]].append(c)

    threads = []
    for link in sorted(set(by_link) | {"t3_" + s for s in subs}):
        sid = link[3:]
        sub = subs.get(sid)
        if sub is not None:
            _, source, post = sub
            if is_deleted(post):
                stats["deleted_or_removed"] += 1
                stats["threads_dropped_deleted_post"] += 1
                stats["comments_dropped_with_thread"] += len(by_link.get(link, []))
                continue
            if post.get("bot"):
                stats["bots_dropped"] += 1
                stats["comments_dropped_with_thread"] += len(by_link.get(link, []))
                continue
        else:
            if not rules.keep_without_submission:
                stats["comments_without_submission"] += len(by_link[link])
                continue
            srcs = sorted({comments[c["id"]][1] for c in by_link[link]}, key=lambda s: SOURCE_PRIORITY.get(s, len(SOURCE_PRIORITY)))
            source = srcs[0]
            post = {"kind": "s", "id": sid, "subreddit": by_link[link][0]["subreddit"], "author": "",
                    "created_utc": None, "title": "", "text": ""}
        kept: dict[str, dict[str, Any]] = {}
        for c in by_link.get(link, []):
            if is_deleted(c):
                stats["deleted_or_removed"] += 1
            elif c.get("bot"):
                stats["bots_dropped"] += 1
            else:
                kept[c["id"]] = c
        children: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for c in kept.values():
            children[c["parent_id"]].append(c)
        if sub is None and not kept:
            continue
        op = post["author"]
        thread_id = content_id({"source": source, "submission_id": link})
        text = post["title"] + "\n\n" + post["text"] if post["title"] else post["text"]
        utts = [_utterance(link, None, op, "op", text, post["created_utc"], 0)]
        # Iterative DFS (threads can be hundreds deep); children in chronological / id order.
        stack = [(c, 1) for c in sorted(children.get(link, []), key=_sort_key, reverse=True)]
        reached = 0
        while stack:
            c, depth = stack.pop()
            reached += 1
            role = "op" if op and c["author"] == op else "commenter"
            stats["op_replies"] += role == "op"
            utts.append(_utterance("t1_" + c["id"], c["parent_id"], c["author"], role, c["text"], c["created_utc"], depth))
            stack.extend((k, depth + 1) for k in sorted(children.get("t1_" + c["id"], []), key=_sort_key, reverse=True))
        stats["orphans_dropped"] += len(kept) - reached  # parent deleted or never crawled: no context chain
        stats["comments_kept"] += reached
        stats["threads_without_submission"] += sub is None
        threads.append({
            "thread_id": thread_id, "subreddit": post["subreddit"], "submission_id": link,
            "created_utc": post["created_utc"], "title": post["title"], "source": source, "utterances": utts,
        })
    threads.sort(key=lambda t: t["thread_id"])
    stats["threads"] = len(threads)
    stats["utterances"] = sum(len(t["utterances"]) for t in threads)
    return threads, stats


def _utterance(rid: str, parent: str | None, author: str, role: str, text: str, t: int | None, depth: int) -> dict:
    # The id hashes what the utterance *is* (Reddit id + text), not where it came from: a dump and a live copy of
    # an unchanged comment share an id.
    return {"id": content_id({"reddit_id": rid, "text": text}), "reddit_id": rid, "parent_id": parent,
            "author": author, "role": role, "text": text, "created_utc": t, "depth": depth}


def shard_threads(threads: list[dict[str, Any]], n_buckets: int) -> dict[str, list[dict[str, Any]]]:
    """Content-addressed shards: bucket = thread_id mod n_buckets (a new thread changes one shard only);
    shard name = hash of the shard's full content, so a changed shard gets a new name and annotation recomputes it."""
    buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for t in threads:
        buckets[int(t["thread_id"], 16) % n_buckets].append(t)
    out = {}
    for b in sorted(buckets):
        ts = sorted(buckets[b], key=lambda t: t["thread_id"])
        name = content_id(ts)
        out[name] = ts
    return out


# ------------------------------------------------------------------------------------------------ thread tables
TABLE_COLUMNS = ("author", "self ID", "parent ID", "text")


def parse_thread_table(rows: Iterable[list[str]], subreddit: str, name: str = "<table>") -> tuple[list[dict], Counter]:
    """Rows of `author, self ID, parent ID, text` (header first) -> raw normalised records (not pseudonymised)."""
    stats: Counter = Counter()
    it = iter(rows)
    header = next(it, None)
    if header is None or tuple(h.strip() for h in header) != TABLE_COLUMNS:
        raise CrawlError(f"{name}: header {header!r} is not {list(TABLE_COLUMNS)}; is this a thread table?")
    out = []
    for i, row in enumerate(it, 2):
        if len(row) != 4 or not row[1].strip():
            stats["malformed_lines"] += 1
            log.debug("%s: row %d malformed (%d fields)", name, i, len(row))
            continue
        author, rid, parent, text = row[0], row[1].strip(), row[2].strip(), row[3]
        if parent == "top_level":
            stats["submissions_read"] += 1
            out.append({"kind": "s", "id": strip_prefix(rid), "subreddit": subreddit, "author": author,
                        "created_utc": None, "title": "", "text": text})
        else:
            stats["comments_read"] += 1
            out.append({"kind": "c", "id": strip_prefix(rid), "link_id": "", "parent_id": parent,
                        "subreddit": subreddit, "author": author, "created_utc": None, "text": text})
    # Tables give only the parent: resolve each comment's thread by walking parents up to the t3_ id.
    parent_of: dict[str, str] = {r["id"] or "": r["parent_id"] or "" for r in out if r["kind"] == "c"}
    for r in out:
        if r["kind"] != "c":
            continue
        p: str = r["parent_id"] or ""
        seen = 0
        while p.startswith("t1_") and p[3:] in parent_of and seen < 10_000:
            p, seen = parent_of[p[3:]], seen + 1
        if p.startswith("t3_"):
            r["link_id"] = p
        else:
            # The parent comment is missing from the table: the thread is unknown. Keep the row under an
            # unresolvable link so it is counted as an orphan rather than silently lost.
            r["link_id"] = "t3_?"
    return out, stats


def read_table(path: Path, subreddit: str, pseudo: Pseudonymiser, rules: ThreadRules) -> tuple[list[dict], Counter]:
    """Read a thread-table CSV; returns pseudonymised records and counters."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            records, stats = parse_thread_table(csv.reader(f), subreddit, str(path))
    except (UnicodeDecodeError, csv.Error) as e:
        raise CrawlError(f"{path}: not a UTF-8 CSV thread table: {e}") from None
    orphans = sum(r.get("link_id") == "t3_?" for r in records)
    stats["orphans_dropped"] += orphans
    return [pseudonymise_record(r, pseudo, rules) for r in records if r.get("link_id") != "t3_?"], stats


# ------------------------------------------------------------------------------------------------ store (I/O)
STATS_KEYS = ("submissions_read", "comments_read", "malformed_lines", "threads", "deleted_or_removed", "comments_kept")


def write_store(threads: list[dict[str, Any]], stats: dict[str, int], out_dir: Path, n_buckets: int) -> dict[str, int]:
    """Write out_dir/shards/<hash>.jsonl + out_dir/stats.json atomically; stale shards and temp leftovers of a
    killed run are removed, unchanged shards are not rewritten. Returns the final stats."""
    from tasks.common.io import write_json, write_jsonl

    shards_dir = out_dir / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    for leftover in shards_dir.glob(".*.tmp"):  # a kill -9 mid-write leaves these behind
        leftover.unlink()
    shards = shard_threads(threads, n_buckets)
    for name, ts in shards.items():
        target = shards_dir / f"{name}.jsonl"
        if not target.is_file():  # content-addressed: an existing file of that name holds exactly these threads
            write_jsonl(target, ts)
    for old in shards_dir.glob("*.jsonl"):
        if old.stem not in shards:
            old.unlink()
    final = {k: int(stats.get(k, 0)) for k in sorted(set(stats) | set(STATS_KEYS))}
    final["shards"] = len(shards)
    write_json(out_dir / "stats.json", final)
    return final


def finish(parts: list[tuple[str, list[dict[str, Any]], Counter]], rules: ThreadRules, max_threads: int = 0):
    """Read results of every input -> (threads, stats). `max_threads` > 0 keeps the first N by thread_id."""
    stats: Counter = Counter()
    for _, _, c in parts:
        stats.update({k: v for k, v in c.items() if k not in ("threads", "utterances")})
    threads, tstats = build_threads(((src, r) for src, recs, _ in parts for r in recs), rules)
    stats.update(tstats)
    if max_threads and len(threads) > max_threads:
        stats["threads_over_limit"] = len(threads) - max_threads
        threads = threads[:max_threads]
        stats["threads"] = len(threads)
        stats["comments_kept"] = sum(len(t["utterances"]) - 1 for t in threads)
        stats["utterances"] = sum(len(t["utterances"]) for t in threads)
        stats["op_replies"] = sum(u["role"] == "op" for t in threads for u in t["utterances"][1:])
    return threads, stats


# ------------------------------------------------------------------------------------------------ run (I/O shell)
def rules_from(cfg: CrawlParams) -> ThreadRules:
    """ThreadRules from the crawl params."""
    return ThreadRules(tuple(cfg.drop_authors), cfg.bot_regex, cfg.keep_without_submission)


def table_part(path: Path, subreddit: str, pseudo: Pseudonymiser, rules: ThreadRules) -> tuple[str, list[dict], Counter]:
    records, stats = read_table(path, subreddit, pseudo, rules)
    stats["table_files"] += 1
    return "table", records, stats


def dump_spec(cfg: CrawlParams, pseudo: Pseudonymiser) -> pushshift.DumpSpec:
    """DumpSpec from the crawl params: subreddit, inclusive dates, prefilter, key, rules."""
    return pushshift.DumpSpec(subreddit=cfg.subreddit, since=pushshift.date_to_epoch(cfg.since),
                              until=pushshift.date_to_epoch(cfg.until, end_of_day=True), prefilter=cfg.prefilter,
                              key=pseudo.key, rules=rules_from(cfg))


def dump_part(path: Path, cfg: CrawlParams, pseudo: Pseudonymiser) -> tuple[str, list[dict], Counter]:
    """Read one dump file; fails when its malformed lines exceed crawl.max_malformed_fraction."""
    res = pushshift.read_dump(path, dump_spec(cfg, pseudo), cfg.workers, cfg.block_mb << 20)
    pushshift.check_malformed(res, cfg.max_malformed_fraction)
    return pushshift.as_part(res)


def run(cfg: CrawlParams, tables: list[Path], dumps: list[Path], out_dir: Path, pseudo: Pseudonymiser,
        live_dirs: list[Path] | None = None) -> dict[str, int]:
    """Read every input in order, build threads, write the store; returns stats (what the CLI calls)."""
    rules = rules_from(cfg)
    parts = [table_part(p, cfg.subreddit, pseudo, rules) for p in tables]
    parts += [dump_part(p, cfg, pseudo) for p in dumps]
    parts += [reddit_live.live_part(d) for d in live_dirs or []]
    threads, stats = finish(parts, rules, cfg.max_threads)
    final = write_store(threads, stats, out_dir, cfg.shards)
    log.info("crawl: %s", {k: final[k] for k in STATS_KEYS})
    return final
