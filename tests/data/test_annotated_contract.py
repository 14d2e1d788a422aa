"""Contract of the annotate stage's output (docs/CONTRACTS.md) on the real data/annotated/ when it has been built, else
on annotations built from the mirror by the session's small annotators (tests/conftest.py `mirror_store`)."""

from __future__ import annotations

import math

import pytest

from tasks.common import paths
from tasks.common.io import read_jsonl

ANNOTATED = paths.DATA / "annotated" / "shards"
THREADS = paths.DATA / "threads" / "shards"


@pytest.mark.mirror
@pytest.mark.slow  # seconds on data/annotated; else the session's small annotators
def test_every_utterance_annotated_once_with_contract_fields(request):
    annotated, threads = ANNOTATED, THREADS
    if not annotated.is_dir() or not any(annotated.glob("*.jsonl")):
        store = request.getfixturevalue("mirror_store")
        annotated, threads = store["annotated"] / "shards", store["threads"] / "shards"
    shards = sorted(threads.glob("*.jsonl"))
    assert shards and sorted(p.name for p in annotated.glob("*.jsonl")) == [p.name for p in shards]
    for shard in shards:
        want = {(u["id"], t["thread_id"]) for t in read_jsonl(shard) for u in t["utterances"] if (u.get("text") or "").strip()}
        got = [(r["id"], r["thread_id"]) for r in read_jsonl(annotated / shard.name)]
        assert len(got) == len(set(got)) and set(got) == want, shard.name
        for r in read_jsonl(annotated / shard.name):
            assert len(r["values"]) == 20 and len(r["emotions"]) == 28
            assert all(0.0 <= x <= 1.0 and not math.isnan(x) for x in r["values"] + r["emotions"])
            assert 0.0 <= r["positivity"] <= 1.0 and 0.0 <= r["neg_intensity"] <= 1.0
