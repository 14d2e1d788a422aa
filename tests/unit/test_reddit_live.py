"""Live crawler: the real praw client against a loopback Reddit-shaped server built from the mirror's dump
samples (tests/fakes/reddit_fake.py). No network."""

from __future__ import annotations

import logging

import orjson
import pytest

from tasks.crawl import crawl, records, reddit_live
from tests.fakes.reddit_fake import FakeReddit, build_site, env_for
from tests.params import group

RULES = records.ThreadRules()


@pytest.fixture(scope="module")
def site(mirror):
    return build_site(mirror)


@pytest.fixture
def live_env(monkeypatch):
    def use(fake):
        for k, v in env_for(fake).items():
            monkeypatch.setenv(k, v)
    return use


def lv(**over):
    return group("crawl.live", subreddit="AskMen", timeout_s=10.0, **over)


def test_crawl_collects_trees_with_bounded_replace_more(site, live_env, tmp_path, caplog):
    with FakeReddit(site) as fake:
        live_env(fake)
        with caplog.at_level(logging.DEBUG):
            st = reddit_live.crawl(lv(), tmp_path / "state", records.Pseudonymiser(b"k"), RULES)
        paths = [p for _, _, p in fake.log]
    n_comments = sum(len(v) for v in site["comments"].values())
    assert st["submissions"] == 12 and st["comments"] == n_comments and st["more_left_unexpanded"] == 0
    assert sum(p.startswith("/api/morechildren") for p in paths) >= 5  # "load more" was expanded
    blob = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()).decode()
    names = {s["author"] for s in site["subs"]} | {c["author"] for v in site["comments"].values() for c in v}
    distinctive = {n for n in names if len(n) >= 6 and n != "[deleted]"}
    assert distinctive and not {n for n in distinctive if f'"{n}"' in blob or n in caplog.text}
    assert "dummy-secret" not in blob + caplog.text

    out = tmp_path / "threads"
    stats = crawl.run(group("crawl", subreddit="AskMen"), [], [], out, records.Pseudonymiser(b"k"),
                      live_dirs=[tmp_path / "state"])
    assert stats["threads"] == 11 and stats["threads_dropped_deleted_post"] == 1 and stats["op_replies"] > 10
    threads = [orjson.loads(x) for f in (out / "shards").glob("*.jsonl") for x in f.read_bytes().splitlines()]
    assert {t["source"] for t in threads} == {"live"}

    with FakeReddit(site, top_shown=2) as fake:  # limit 0: no expansion at all, and it is counted
        live_env(fake)
        st0 = reddit_live.crawl(lv(replace_more_limit=0), tmp_path / "s0", records.Pseudonymiser(b"k"), RULES)
        assert not any(p.startswith("/api/morechildren") for _, _, p in fake.log)
    assert st0["more_left_unexpanded"] >= 10 and st0["comments"] < n_comments


def test_incremental_runs_fetch_only_new_submissions(site, live_env, tmp_path):
    state = tmp_path / "state"
    with FakeReddit(site) as fake:
        live_env(fake)
        assert reddit_live.crawl(lv(max_submissions=5), state, records.Pseudonymiser(b"k"), RULES)["submissions"] == 5
        ck = orjson.loads((state / "checkpoint.json").read_bytes())
        assert ck["complete_newest_utc"] is None  # budget spent: not complete, the next run resumes
        assert reddit_live.crawl(lv(), state, records.Pseudonymiser(b"k"), RULES)["submissions"] == 7
        fake.log.clear()
        assert reddit_live.crawl(lv(), state, records.Pseudonymiser(b"k"), RULES) == {}
        assert not any(p.startswith("/comments/") for _, _, p in fake.log)
        newer = {**site["subs"][0], "id": "zzzzz1", "name": "t3_zzzzz1", "created_utc": site["subs"][0]["created_utc"] + 60}
        site2 = {"subs": [newer, *site["subs"]], "comments": {**site["comments"], "zzzzz1": []}}
        fake.site = site2
        fake.log.clear()
        assert reddit_live.crawl(lv(), state, records.Pseudonymiser(b"k"), RULES)["submissions"] == 1
        assert [p for _, _, p in fake.log if p.startswith("/comments/")] == ["/comments/zzzzz1/"]


def test_rate_limit_headers_are_respected(site, live_env, tmp_path):
    with FakeReddit(site, ratelimit_exhaust_after=3) as fake:  # answer 3 says: quota spent, resets in 1 s
        live_env(fake)
        reddit_live.crawl(lv(max_submissions=2), tmp_path / "s", records.Pseudonymiser(b"k"), RULES)
        t = [x for x, _, _ in fake.log]
    assert t[3] - t[2] >= 0.9, "praw must wait for the reset before the next request"
    assert max(b - a for a, b in zip(t[3:], t[4:], strict=False)) < 0.9  # and not pace needlessly otherwise


def test_transient_errors_are_retried_and_credentials_required(site, live_env, tmp_path, monkeypatch):
    with FakeReddit(site, fail_first=1) as fake:  # one 503: prawcore retries it
        live_env(fake)
        assert reddit_live.crawl(lv(max_submissions=1), tmp_path / "s", records.Pseudonymiser(b"k"), RULES)["submissions"] == 1
    monkeypatch.delenv("REDDIT_CLIENT_SECRET")
    with pytest.raises(records.CrawlError, match="REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET"):
        reddit_live.crawl(lv(), tmp_path / "s2", records.Pseudonymiser(b"k"), RULES)
