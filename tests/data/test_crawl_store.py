"""Contract of data/threads/ built from the mirror's r/offmychest thread table: schema, counts, OP turns, and no
raw username anywhere (files, logs). Reads the mirror; skips when it is absent."""

from __future__ import annotations

import csv
import logging
import re

import orjson
import pytest

from tasks.crawl import crawl
from tasks.crawl.records import Pseudonymiser
from tests.params import group

TABLE = "reddit-offmychest-threads/offmychest.csv"
UTT_KEYS = {"id", "reddit_id", "parent_id", "author", "role", "text", "created_utc", "depth"}
THREAD_KEYS = {"thread_id", "subreddit", "submission_id", "created_utc", "title", "source", "utterances"}


@pytest.fixture(scope="module")
def store(mirror, tmp_path_factory):
    out = tmp_path_factory.mktemp("threads")

    cfg = group("crawl")
    handler = _Capture()
    logging.getLogger().addHandler(handler)
    old = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        stats = crawl.run(cfg, [mirror / TABLE], [], out, Pseudonymiser(b"test-key"))
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(old)
    threads = [orjson.loads(line) for f in sorted((out / "shards").glob("*.jsonl")) for line in f.read_bytes().splitlines()]
    return out, stats, threads, handler.text


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))

    @property
    def text(self):
        return "\n".join(self.lines)


def test_counts_match_the_table(store):
    out, stats, threads, _ = store
    assert stats["submissions_read"] == 30 and stats["comments_read"] == 2371 and stats["malformed_lines"] == 0
    assert stats["threads"] == 30 == len(threads)
    # 78 comments cannot be chained back to their post (PROVENANCE.md); every other comment is kept.
    assert stats["orphans_dropped"] == 78
    assert stats["comments_kept"] + stats["orphans_dropped"] + stats["deleted_or_removed"] + stats.get("bots_dropped", 0) == 2371
    assert 150 <= stats["op_replies"] <= 174
    assert orjson.loads((out / "stats.json").read_bytes()) == stats
    assert all(isinstance(stats[k], int) for k in crawl.STATS_KEYS)


def test_schema_and_tree(store):
    _, _, threads, _ = store
    for t in threads:
        assert set(t) == THREAD_KEYS and t["source"] == "table" and t["subreddit"] == "offmychest"
        u = t["utterances"]
        assert u[0]["reddit_id"] == t["submission_id"] and u[0]["parent_id"] is None and u[0]["role"] == "op"
        seen = {u[0]["reddit_id"]: 0}
        for x in u[1:]:
            assert set(x) == UTT_KEYS and x["role"] in ("op", "commenter")
            assert x["parent_id"] in seen, "a parent comes before its replies"
            assert x["depth"] == seen[x["parent_id"]] + 1
            seen[x["reddit_id"]] = x["depth"]
    ids = [x["id"] for t in threads for x in t["utterances"]]
    assert len(ids) == len(set(ids))
    assert len({t["thread_id"] for t in threads}) == 30


def test_op_role_follows_the_post_author(store):
    _, _, threads, _ = store
    for t in threads:
        op = t["utterances"][0]["author"]
        assert all((x["role"] == "op") == (x["author"] == op) for x in t["utterances"])


def test_no_raw_username_anywhere(store, mirror):
    out, _, threads, logs = store
    with open(mirror / TABLE, encoding="utf-8", newline="") as f:
        names = {row[0] for row in list(csv.reader(f))[1:]}
    authors = {x["author"] for t in threads for x in t["utterances"]}
    assert not names & authors
    assert all(re.fullmatch(r"u_[0-9a-f]{16}", a) for a in authors)
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file()).decode()
    # Names that are not plain words would only appear if leaked (as an author or a u/ mention).
    distinctive = {n for n in names if len(n) >= 8 and re.search(r"\d|_|-", n)}
    assert len(distinctive) > 100
    leaked = {n for n in distinctive if f'"{n}"' in blob or f"u/{n}" in blob}
    assert not leaked, f"{len(leaked)} raw usernames written"
    assert not {n for n in distinctive if n in logs}


def test_rerun_is_identical_and_skips_unchanged_shards(store, mirror, tmp_path):
    out, stats, _, _ = store

    again = crawl.run(group("crawl"), [mirror / TABLE], [], out, Pseudonymiser(b"test-key"))
    assert again == stats
    other = tmp_path / "other"
    crawl.run(group("crawl"), [mirror / TABLE], [], other, Pseudonymiser(b"test-key"))
    a = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    assert a == {p.name: p.read_bytes() for p in (other / "shards").iterdir()}


def test_table_cli_and_key_policy(mirror, tmp_path):
    """`esvr crawl table` writes the store; without ESVR_PSEUDONYM_KEY it uses the fallback only when params allow."""
    import json

    import yaml

    from tests.conftest import ROOT, run_cli

    out = tmp_path / "t"
    r = run_cli(["esvr", "crawl", "table", "--input", str(mirror / TABLE), "--out", str(out)], ROOT,
                {"ESVR_PSEUDONYM_KEY": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "public fallback key" in r.stderr  # tiny profile: warned, not silent
    stats = json.loads((out / "stats.json").read_text())
    assert stats["threads"] == 30 and stats["comments_read"] == 2371
    strict = tmp_path / "strict.yaml"
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["crawl"]["pseudonym_fallback"] = False
    strict.write_text(yaml.safe_dump(data))
    r = run_cli(["esvr", "crawl", "table", "--input", str(mirror / TABLE), "--out", str(tmp_path / "u"),
                 "--params", str(strict)], ROOT, {"ESVR_PSEUDONYM_KEY": ""})
    assert r.returncode == 1 and "ESVR_PSEUDONYM_KEY is not set" in r.stderr
    assert not (tmp_path / "u" / "stats.json").exists()
