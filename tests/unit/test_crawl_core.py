"""Pure core of stage crawl: pseudonyms, field drift, thread trees, de-dup, drops, content-addressed shards.
Hand-made records only (no dataset text in the repository)."""

from __future__ import annotations

import random

import pytest

from tasks.crawl import crawl, records
from tasks.crawl.crawl import build_threads, shard_threads
from tasks.crawl.records import Pseudonymiser, ThreadRules

RULES = ThreadRules()


def sub(sid, author="alice", text="post body", title="t", t=100, **kw):
    return {"kind": "s", "id": sid, "subreddit": "offmychest", "author": author, "created_utc": t, "title": title,
            "text": text, **kw}


def com(cid, parent, link, author="bob", text="a reply", t=200, **kw):
    return {"kind": "c", "id": cid, "link_id": link, "parent_id": parent, "subreddit": "offmychest", "author": author,
            "created_utc": t, "text": text, **kw}


def pseudo_all(recs, key=b"k"):
    p = Pseudonymiser(key)
    return [records.pseudonymise_record(r, p, RULES) for r in recs]


def test_pseudonyms_are_keyed_stable_and_scrub_mentions():
    a, b = Pseudonymiser(b"key-a"), Pseudonymiser(b"key-b")
    assert a("alice") == a("alice") != a("bob")
    assert a("alice") != b("alice")  # a different key gives unlinkable pseudonyms
    assert a("alice").startswith("u_") and "alice" not in a("alice")
    assert a.scrub("thanks u/alice and /u/bob!") == f"thanks u/{a('alice')} and /u/{a('bob')}!"
    assert a.fingerprint != b.fingerprint and "key" not in a.fingerprint


def test_key_comes_from_env_and_fallback_needs_params(monkeypatch, caplog):
    monkeypatch.delenv(records.KEY_ENV, raising=False)
    with pytest.raises(records.CrawlError, match="ESVR_PSEUDONYM_KEY"):
        records.pseudonymiser_from_env(allow_fallback=False, seed=1)
    with caplog.at_level("WARNING"):
        p = records.pseudonymiser_from_env(allow_fallback=True, seed=1)
    assert p.key == records.fallback_key(1) and "NOT secret" in caplog.text
    monkeypatch.setenv(records.KEY_ENV, "s3cret")
    assert records.pseudonymiser_from_env(allow_fallback=True, seed=1).key == b"s3cret"


@pytest.mark.parametrize("v,want", [(1134365188, 1134365188), ("1134365188", 1134365188), (1134365188.0, 1134365188),
                                    ("1134365188.5", 1134365188), (None, None), ("soon", None), (True, None)])
def test_created_utc_drift(v, want):
    assert records.to_epoch(v) == want


def test_normalise_handles_missing_keys_and_prefixes():
    c = records.normalise_comment({"id": "c1", "link_id": "abc", "body": None, "author": None})
    assert c["link_id"] == "t3_abc" and c["parent_id"] == "t3_abc" and c["text"] == "" and c["author"] == "[deleted]"
    s = records.normalise_submission({"name": "t3_xyz", "title": "T", "created_utc": "7"})
    assert s["id"] == "xyz" and s["created_utc"] == 7 and s["text"] == ""
    assert records.normalise_comment({"id": "c2"}) is None


def tree():
    return [sub("p1"), com("c1", "t3_p1", "t3_p1", t=210), com("c2", "t1_c1", "t3_p1", author="alice", t=220),
            com("c3", "t3_p1", "t3_p1", author="carol", t=205), com("c4", "t1_c9", "t3_p1", t=230),  # orphan
            com("c5", "t3_p1", "t3_p1", text="[removed]"), com("c6", "t1_c5", "t3_p1"),  # child of a removed one
            com("c7", "t3_p1", "t3_p1", author="AutoModerator"), com("c8", "t3_p1", "t3_p1", author="RemindMeBot"),
            com("c10", "t3_p1", "t3_p1", author="abbot", t=240)]


def test_thread_tree_roles_depths_drops():
    threads, st = build_threads([("dump", r) for r in pseudo_all(tree())], RULES)
    (t,) = threads
    u = t["utterances"]
    assert [x["reddit_id"] for x in u] == ["t3_p1", "t1_c3", "t1_c1", "t1_c2", "t1_c10"]  # DFS, chronological
    assert [x["depth"] for x in u] == [0, 1, 1, 2, 1]
    assert [x["role"] for x in u] == ["op", "commenter", "commenter", "op", "commenter"]
    assert u[0]["parent_id"] is None and u[0]["text"] == "t\n\npost body" and u[3]["parent_id"] == "t1_c1"
    assert st["deleted_or_removed"] == 1 and st["bots_dropped"] == 2 and st["orphans_dropped"] == 2
    assert st["comments_kept"] == 4 and st["op_replies"] == 1 and st["threads"] == 1
    assert all(x["author"].startswith("u_") for x in u)


def test_ids_do_not_depend_on_input_order():
    recs = [("dump", r) for r in pseudo_all(tree())]
    a, _ = build_threads(recs, RULES)
    random.Random(3).shuffle(recs)
    b, _ = build_threads(recs, RULES)
    assert a == b


def test_dedup_across_dump_and_live_prefers_the_archived_copy():
    dump = pseudo_all([sub("p1"), com("c1", "t3_p1", "t3_p1", text="original")])
    live = pseudo_all([sub("p1"), com("c1", "t3_p1", "t3_p1", text="edited later"), com("c2", "t3_p1", "t3_p1")])
    threads, st = build_threads([("live", r) for r in live] + [("dump", r) for r in dump], RULES)
    (t,) = threads
    assert [u["text"] for u in t["utterances"][1:]] == ["original", "a reply"]
    assert t["source"] == "dump" and st["duplicates_dropped"] == 2
    assert len({u["id"] for u in t["utterances"]}) == len(t["utterances"])


def test_deleted_post_drops_thread_and_stub_for_comment_only_dumps():
    recs = pseudo_all([sub("p1", author="[deleted]"), com("c1", "t3_p1", "t3_p1"), com("c2", "t3_p2", "t3_p2")])
    threads, st = build_threads([("dump", r) for r in recs], RULES)
    assert [t["submission_id"] for t in threads] == ["t3_p2"] and threads[0]["utterances"][0]["text"] == ""
    assert st["threads_dropped_deleted_post"] == 1 and st["threads_without_submission"] == 1
    strict, _ = build_threads([("dump", r) for r in recs], ThreadRules(keep_without_submission=False))
    assert strict == []


def test_shards_are_content_addressed_and_local():
    recs = pseudo_all([sub(f"p{i}") for i in range(40)] + [com(f"c{i}", f"t3_p{i}", f"t3_p{i}") for i in range(40)])
    threads, _ = build_threads([("dump", r) for r in recs], RULES)
    before = shard_threads(threads, 8)
    assert sum(len(v) for v in before.values()) == 40
    extra, _ = build_threads([("dump", r) for r in recs + pseudo_all([sub("new")])], RULES)
    after = shard_threads(extra, 8)
    assert len(set(before) - set(after)) == 1 and len(set(after) - set(before)) == 1  # one shard changed


def test_thread_table_parsing():
    rows = [["author", "self ID", "parent ID", "text"], ["alice", "p1", "top_level", "body"],
            ["bob", "c1", "t3_p1", "hi"], ["alice", "c2", "t1_c1", "thanks"], ["x", "c3", "t1_gone", "?"], ["bad"]]
    recs, st = crawl.parse_thread_table(rows, "offmychest")
    assert st["submissions_read"] == 1 and st["comments_read"] == 3 and st["malformed_lines"] == 1
    assert {r["id"]: r.get("link_id") for r in recs if r["kind"] == "c"} == {"c1": "t3_p1", "c2": "t3_p1", "c3": "t3_?"}
    with pytest.raises(records.CrawlError, match="header"):
        crawl.parse_thread_table([["a", "b"]], "x", "f.csv")
