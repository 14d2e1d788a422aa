"""Pushshift dump reader: long-window zstd, multi-byte characters split across reads, drifting fields, filters,
malformed lines and their threshold, truncated files, both cores, and the contract CLI. Synthetic lines are made
here; the genuine dump samples are read from the mirror."""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from pathlib import Path

import orjson
import pytest
import zstandard

from tasks.crawl import pushshift, records
from tasks.crawl.pushshift import DumpError, DumpSpec
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def comment(i: int, sub: str = "offmychest", t=1_577_000_000, **kw) -> dict:
    return {"id": f"c{i}", "link_id": f"t3_p{i % 7}", "parent_id": f"t3_p{i % 7}", "subreddit": sub,
            "author": f"user_{i % 13}", "created_utc": t + i, "body": f"héllo 😀 wörld {i} ✓ — naïve", **kw}


def write_zst(path: Path, lines: list[bytes], **params) -> Path:
    cctx = zstandard.ZstdCompressor(**params)
    path.write_bytes(cctx.compress(b"".join(lines)))
    return path


def lines_of(recs) -> list[bytes]:
    return [orjson.dumps(r) + b"\n" for r in recs]


SPEC = DumpSpec(subreddit="offmychest", key=b"k")


def test_multibyte_characters_split_across_reads(tmp_path):
    f = write_zst(tmp_path / "RC_x.zst", lines_of(comment(i) for i in range(300)))
    whole = pushshift.read_dump(f, SPEC)
    # Tiny reads and blocks cut every multi-byte character somewhere; nothing may change.
    for block, read in [(7, 3), (64, 5), (1000, 1)]:
        blocks = list(pushshift.iter_blocks(f, block, read))
        assert b"".join(b for _, b in blocks) == zstandard.ZstdDecompressor().decompress(f.read_bytes())
        assert all(b.endswith(b"\n") for _, b in blocks)
        got = [r for base, b in blocks for r in pushshift.parse_block(b, base, "c", SPEC)[0]]
        assert got == whole.records
    assert len(whole.records) == 300 and "😀" in whole.records[0]["text"]


def test_long_window_dump_from_the_mirror(mirror):
    f = mirror / "pushshift-samples" / "RC_2005-12.zst"
    with pytest.raises(zstandard.ZstdError):  # proves the sample needs the 2 GiB window
        with open(f, "rb") as fh:
            zstandard.ZstdDecompressor().stream_reader(fh).read()
    res = pushshift.read_dump(f, DumpSpec(subreddit="reddit.com", key=b"k"))
    assert res.kind == "c" and res.counts["lines"] == 1075 and res.counts["malformed_lines"] == 0
    assert len(res.records) == 1075


def test_field_drift_and_filters(tmp_path):
    recs = [comment(0, t=1_577_836_800), comment(1, created_utc="1577923200"), comment(2, created_utc=1578009600.7),
            comment(3, sub="OffMyChest"), comment(4, sub="AskMen")]
    recs[1].pop("created_utc", None)
    recs[1]["created_utc"] = "1577923200"
    recs[2]["created_utc"] = 1578009600.7
    f = write_zst(tmp_path / "offmychest_comments.zst", lines_of(recs))
    for prefilter in (True, False):
        spec = DumpSpec(subreddit="offmychest", prefilter=prefilter, key=b"k")
        res = pushshift.read_dump(f, spec)
        assert [r["id"] for r in res.records] == ["c0", "c1", "c2", "c3"]
        assert [r["created_utc"] for r in res.records][:3] == [1_577_836_800, 1_577_923_200, 1_578_009_600]
        dated = DumpSpec(subreddit="offmychest", prefilter=prefilter, key=b"k",
                         since=pushshift.date_to_epoch("2020-01-02"), until=pushshift.date_to_epoch("2020-01-02", True))
        res = pushshift.read_dump(f, dated)
        assert [r["id"] for r in res.records] == ["c1"] and res.counts["date_filtered"] == 3


def test_records_are_pseudonymised_in_the_reader(tmp_path):
    f = write_zst(tmp_path / "RC_y.zst", lines_of(comment(i) for i in range(20)))
    res = pushshift.read_dump(f, SPEC)
    assert not any(r["author"].startswith("user_") for r in res.records)
    assert {r["author"] for r in res.records} == {records.Pseudonymiser(b"k")(f"user_{i % 13}") for i in range(20)}


@pytest.mark.parametrize("prefilter", [True, False])
def test_malformed_lines_are_counted_and_bounded(tmp_path, prefilter):
    good = lines_of(comment(i) for i in range(200))
    bad = [b'{"id": "x", "subreddit": "offmychest", broken\n', b"not json at all\n", b'{"truncated": \n']
    f = write_zst(tmp_path / "RC_z.zst", good[:50] + bad[:1] + good[50:120] + bad[1:] + good[120:])
    res = pushshift.read_dump(f, DumpSpec(subreddit="offmychest", prefilter=prefilter, key=b"k"))
    assert res.counts["malformed_lines"] == 3 and len(res.records) == 200 and res.counts["lines"] == 203
    assert res.first_malformed > 0
    pushshift.check_malformed(res, 0.05)
    with pytest.raises(DumpError, match=r"RC_z\.zst: 3 malformed lines of 203.*max_malformed_fraction"):
        pushshift.check_malformed(res, 0.01)


def test_invalid_json_that_looks_like_an_object(tmp_path):
    """Braces in place but not JSON: found by parsing. With the prefilter only lines naming the subreddit are
    parsed, so such a line of another subreddit is counted only without it (documented lower bound)."""
    good = lines_of(comment(i, sub="offmychest" if i % 10 == 0 else "other") for i in range(40))
    bad = [b'{"id": "y", "subreddit": "offmychest", oops}\n', b'{"id": "z", "subreddit": "other", oops}\n']
    f = write_zst(tmp_path / "RC_j.zst", good[:10] + bad + good[10:])
    on = pushshift.read_dump(f, DumpSpec(subreddit="offmychest", key=b"k"))
    off = pushshift.read_dump(f, DumpSpec(subreddit="offmychest", prefilter=False, key=b"k"))
    assert on.counts["parsed"] == 5 and off.counts["parsed"] == 42  # the prefilter parsed only candidate lines
    assert on.counts["malformed_lines"] == 1 and off.counts["malformed_lines"] == 2
    assert on.records == off.records and len(on.records) == 4


def test_truncated_file_names_file_and_offset(tmp_path):
    f = write_zst(tmp_path / "RC_t.zst", lines_of(comment(i) for i in range(2000)), level=3)
    data = f.read_bytes()
    cut = tmp_path / "RC_cut.zst"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DumpError, match=rf"RC_cut\.zst: truncated.*compressed byte {len(data) // 2}"):
        pushshift.read_dump(cut, SPEC)


def test_multi_frame_files(tmp_path):
    a, b = lines_of(comment(i) for i in range(10)), lines_of(comment(i) for i in range(10, 25))
    c = zstandard.ZstdCompressor()
    f = tmp_path / "RC_mf.zst"
    f.write_bytes(c.compress(b"".join(a)) + c.compress(b"".join(b)))
    assert len(pushshift.read_dump(f, SPEC).records) == 25


def test_two_workers_give_the_serial_result(tmp_path, monkeypatch):
    f = write_zst(tmp_path / "RC_p.zst", lines_of(comment(i, sub="offmychest" if i % 3 else "x") for i in range(3000)))
    serial = pushshift.read_dump(f, SPEC, workers=1, block_bytes=20_000)
    monkeypatch.setattr(pushshift, "PARALLEL_MIN_BYTES", 0)
    par = pushshift.read_dump(f, SPEC, workers=2, block_bytes=20_000)
    assert par.records == serial.records and par.counts == serial.counts and len(par.records) == 2000
    g = tmp_path / "RS_q_submissions.zst"
    write_zst(g, lines_of({"id": f"s{i}", "subreddit": "offmychest", "title": "t", "author": "a"} for i in range(5)))
    both = pushshift.read_dumps([f, g], SPEC, workers=2)
    assert [len(r.records) for r in both] == [2000, 5] and both[1].kind == "s"


def test_contract_cli(tmp_path, mirror):
    out = tmp_path / "store"
    f = mirror / "pushshift-samples" / "RC_2005-12.zst"
    bad = write_zst(tmp_path / "RC_bad.zst", lines_of(comment(i, sub="reddit.com") for i in range(5)) + [b"oops\n"])
    r = run_cli(["esvr", "crawl", "dump", "--input", str(f), str(bad), "--subreddit", "reddit.com", "--since",
                 "2005-12-01", "--until", "2005-12-31", "--out", str(out), "--max-malformed-fraction", "0.5"], ROOT, {"ESVR_PSEUDONYM_KEY": "x"})
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    for k in ("submissions_read", "comments_read", "malformed_lines", "threads", "deleted_or_removed", "comments_kept"):
        assert isinstance(stats[k], int), k
    assert stats["comments_read"] == 1075 + 6 and stats["malformed_lines"] == 1 and stats["submissions_read"] == 0
    assert stats["threads"] > 300 and stats["deleted_or_removed"] > 0 and stats["date_filtered"] == 5
    assert list((out / "shards").glob("*.jsonl"))
    r = run_cli(["esvr", "crawl", "dump", "--input", str(bad), "--subreddit", "reddit.com", "--out", str(out)], ROOT,
                {"ESVR_PSEUDONYM_KEY": "x"})
    assert r.returncode == 1 and "RC_bad.zst: 1 malformed lines of 6" in r.stderr  # 17 % > the tiny profile's 5 %


def test_counter_keys_are_stable():
    assert set(pushshift._empty_counts()) == {"lines", "malformed_lines", "matched", "date_filtered", "parsed"}
    assert isinstance(pushshift._empty_counts(), Counter)


DRIFT = [  # each line alone makes a block non-canonical (or tests a canonical edge); the result must not depend on the path
    {}, {"id": "t1_c9"}, {"link_id": "p3"}, {"parent_id": ""}, {"parent_id": None}, {"created_utc": "1577000009"},
    {"created_utc": 1577000009.9}, {"created_utc": None, "created": 1577000001}, {"author": None}, {"body": None},
    {"kind": "t1"}, {"subreddit": "OffMyChest"}, {"id": ""}, {"id": 12345}, {"body": "hi u/user_3, see /u/user_4"},
    {"author": "[deleted]", "body": "[removed]"}, {"author": "AutoModerator"}, {"subreddit": "other"},
]


@pytest.mark.parametrize("drift", DRIFT, ids=[",".join(d) or "canonical" for d in DRIFT])
def test_canonical_fast_path_equals_the_general_path(drift):
    """Dense comment blocks are decoded straight into records when every line already has the normalised types;
    the general path (kind unknown: per-line normalisation) must give the same records, counts and offsets."""
    lines = lines_of([comment(i) for i in range(6)] + [{**comment(6), **drift}] + [comment(i) for i in range(7, 12)])
    block = b"".join(lines)
    for spec in (SPEC, DumpSpec(subreddit="offmychest", key=b"k", pseudonymise=False),
                 DumpSpec(subreddit="offmychest", key=b"k", since=1_577_000_003, until=1_577_000_010)):
        fast = pushshift.parse_block(block, 100, "c", spec)
        general = pushshift.parse_block(block, 100, None, spec)
        assert fast == general
        assert [list(r) for r in fast[0]] == [list(r) for r in general[0]]  # same keys in the same order
    took_fast = pushshift._canonical_comments(memoryview(block), 12, "offmychest", None, None, None) is not None
    canonical = not drift or set(drift) <= {"subreddit", "body", "author", "kind"} and None not in drift.values()
    assert took_fast == canonical  # the comparison above exercised the path it meant to


def test_canonical_fast_path_on_the_genuine_dump(mirror):
    block = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(
        open(mirror / "pushshift-samples" / "RC_2005-12.zst", "rb")).read()
    spec = DumpSpec(subreddit="reddit.com", key=b"k")
    fast, general = pushshift.parse_block(block, 0, "c", spec), pushshift.parse_block(block, 0, None, spec)
    assert fast == general and len(fast[0]) == 1075


@pytest.mark.parametrize("workers", [2, 3])
def test_truncated_file_through_the_parallel_readers(tmp_path, monkeypatch, workers):
    """2 workers decompress in a child process, 3 parse in a pool: the error still names file and offset, comes
    after the records before it, and leaves no process behind."""
    monkeypatch.setattr(pushshift, "PARALLEL_MIN_BYTES", 0)
    f = write_zst(tmp_path / "RC_t.zst", lines_of(comment(i) for i in range(4000)), level=3)
    data = f.read_bytes()
    cut = tmp_path / "RC_cut.zst"
    cut.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(DumpError, match=rf"RC_cut\.zst: truncated.*compressed byte {len(data) // 2}"):
        for recs, *_ in pushshift.iter_dump(cut, SPEC, workers=workers, block_bytes=20_000):
            seen += recs
    assert seen and [r["id"] for r in seen] == [f"c{i}" for i in range(len(seen))]
    assert not multiprocessing.active_children()


def test_stopping_a_stream_early_stops_the_decompression_child(tmp_path, monkeypatch):
    monkeypatch.setattr(pushshift, "PARALLEL_MIN_BYTES", 0)
    f = write_zst(tmp_path / "RC_s.zst", lines_of(comment(i) for i in range(20000)))
    it = pushshift.iter_dump(f, SPEC, workers=2, block_bytes=20_000)
    first = next(it)
    assert first[0] and multiprocessing.active_children()  # the child is decompressing ahead
    it.close()
    assert not multiprocessing.active_children()


def test_streamed_batches_add_up_to_the_collected_result(tmp_path, monkeypatch):
    monkeypatch.setattr(pushshift, "PARALLEL_MIN_BYTES", 0)
    f = write_zst(tmp_path / "RC_b.zst", lines_of(comment(i, sub="offmychest" if i % 4 else "x") for i in range(3000)))
    whole = pushshift.read_dump(f, SPEC, workers=1)
    for workers in (1, 2, 3):
        batches = list(pushshift.iter_dump(f, SPEC, workers=workers, block_bytes=30_000))
        assert len(batches) > 3 and [r for b in batches for r in b[0]] == whole.records
        assert sum((b[1] for b in batches), Counter()) == whole.counts and {b[3] for b in batches} == {"c"}
