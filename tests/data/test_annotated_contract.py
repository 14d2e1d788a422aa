"""Contract of the annotate stage's output (docs/CONTRACTS.md) on the real data/annotated/, when it has been built."""

from __future__ import annotations

import math

import pytest

from tasks.common import paths
from tasks.common.io import read_jsonl

ANNOTATED = paths.DATA / "annotated" / "shards"
THREADS = paths.DATA / "threads" / "shards"


def test_every_utterance_annotated_once_with_contract_fields():
    if not ANNOTATED.is_dir() or not any(ANNOTATED.glob("*.jsonl")):
        pytest.skip(f"{ANNOTATED} not built: run `dvc repro annotate`")
    shards = sorted(THREADS.glob("*.jsonl"))
    assert sorted(p.name for p in ANNOTATED.glob("*.jsonl")) == [p.name for p in shards]
    for shard in shards:
        want = {(u["id"], t["thread_id"]) for t in read_jsonl(shard) for u in t["utterances"] if (u.get("text") or "").strip()}
        got = [(r["id"], r["thread_id"]) for r in read_jsonl(ANNOTATED / shard.name)]
        assert len(got) == len(set(got)) and set(got) == want, shard.name
        for r in read_jsonl(ANNOTATED / shard.name):
            assert len(r["values"]) == 20 and len(r["emotions"]) == 28
            assert all(0.0 <= x <= 1.0 and not math.isnan(x) for x in r["values"] + r["emotions"])
            assert 0.0 <= r["positivity"] <= 1.0 and 0.0 <= r["neg_intensity"] <= 1.0
