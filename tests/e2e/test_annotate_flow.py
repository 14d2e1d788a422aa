"""Stage `annotate` on hand-made thread shards (CONTRACTS format): one record per utterance, per-shard Prefect
cache keyed by shard hash + model versions, new shards are the only ones annotated again."""

from __future__ import annotations

import json

import pytest

from tasks import annotate
from tasks.common.hashing import content_id
from tasks.common.io import read_jsonl, write_jsonl
from tests.params import group
from tests.supporter_data import build_annotators


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory, mirror):
    """Untrained annotators (base encoder + fresh heads) saved in the real folder format: fast and enough for I/O."""
    return build_annotators(tmp_path_factory.mktemp("models"), mirror)


def _thread(seed: str, texts: list[str]) -> dict:
    utts = [{"id": content_id([seed, i]), "reddit_id": f"t1_{seed}{i}", "parent_id": None, "author": "u", "role": "op" if i == 0 else "commenter",
             "text": t, "created_utc": None, "depth": min(i, 1)} for i, t in enumerate(texts)]
    return {"thread_id": content_id(seed), "subreddit": "test", "submission_id": f"t3_{seed}", "created_utc": None,
            "title": "t", "source": "table", "utterances": utts}


def _cfg(values, emotion, **kw):
    return group("annotate", value_model=str(values), emotion_model=str(emotion), batch_size=4, max_tokens=256,
                          max_length=32, num_threads=2, **kw)


def test_annotate_shards_cached_and_incremental(prefect_api, model_folders, tmp_path):
    values, emotion = model_folders
    src, out = tmp_path / "threads", tmp_path / "annotated"
    write_jsonl(src / "a.jsonl", [_thread("a", ["I want to be free to choose my own path in life.", "me too", "ok"])])
    write_jsonl(src / "b.jsonl", [_thread("b", ["We must protect the forests and rivers.", "agreed, nature matters"]),
                                  _thread("c", ["Hello there"])])
    cfg = _cfg(values, emotion)
    s1 = annotate.annotate_all(cfg, src, out)
    assert (s1["shards"], s1["annotated"], s1["cached"], s1["utterances"]) == (2, 2, 0, 6)
    rows = list(read_jsonl(out / "b.jsonl"))
    assert len(rows) == 3 and {r["thread_id"] for r in rows} == {content_id("b"), content_id("c")}
    for r in rows:
        assert set(r) == {"id", "thread_id", "values", "emotions", "positivity", "neg_intensity"}
        assert len(r["values"]) == 20 and len(r["emotions"]) == 28
        assert 0.0 <= r["positivity"] <= 1.0 and 0.0 <= r["neg_intensity"] <= 1.0
    # second run: nothing changed, both shards come from the Prefect cache
    s2 = annotate.annotate_all(cfg, src, out)
    assert (s2["annotated"], s2["cached"]) == (0, 2)
    # a new shard is the only one annotated; a deleted output is rebuilt; a removed shard's output goes
    write_jsonl(src / "d.jsonl", [_thread("d", ["new crawl data"])])
    (out / "a.jsonl").unlink()
    (src / "b.jsonl").unlink()
    s3 = annotate.annotate_all(cfg, src, out)
    assert (s3["shards"], s3["annotated"]) == (2, 2) and s3["cached"] == 0
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["a.jsonl", "d.jsonl"]
    assert s3["model_versions"] == s1["model_versions"]


def test_annotate_fails_on_too_many_empty_utterances(prefect_api, model_folders, tmp_path):
    values, emotion = model_folders
    src = tmp_path / "threads"
    t = _thread("e", ["fine text", "", "   "])
    write_jsonl(src / "e.jsonl", [t])
    with pytest.raises(annotate.AnnotateError, match="max_bad_fraction"):
        annotate.annotate_all(_cfg(values, emotion, max_bad_fraction=0.5), src, tmp_path / "out")
    s = annotate.annotate_all(_cfg(values, emotion, max_bad_fraction=0.7), src, tmp_path / "out2")
    assert (s["utterances"], s["skipped"]) == (1, 2)
    assert json.loads((tmp_path / "out2" / "e.jsonl").read_text())["id"] == t["utterances"][0]["id"]
