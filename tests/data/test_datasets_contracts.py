"""Data contracts of data/datasets (issue Datasets §7), on hand-built records AND on the stage's real output.

* no thread in two splits; * every TVD label is 3 distinct valid categories; * chosen != rejected;
* a rejected comment shares no value with its target values (re-derived from the annotations, not only the
  record's own field); * every record traces to its thread id and to utterances of that thread.

Real output: the project's data/datasets when `dvc repro datasets` has run; otherwise the stage core is run here on
the project's data/threads + data/annotated (crawl + annotate outputs built from the mirror). Skips say which.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tasks import datasets as ds
from tasks.common import paths
from tasks.common.config import load_params
from tasks.common.io import read_json, read_jsonl
from tasks.domain import prompts
from tests.dataset_builders import write_store
from tests.params import datasets_cfg


def _store_index(threads_dir: Path) -> dict[str, set[str]]:
    """thread id → its utterance ids."""
    return {t["thread_id"]: {u["id"] for u in t["utterances"]}
            for f in sorted((threads_dir / "shards").glob("*.jsonl")) for t in read_jsonl(f)}


def _annotations(ann_dir: Path) -> dict[str, list[float]]:
    return {a["id"]: a["values"] for f in sorted((ann_dir / "shards").glob("*.jsonl")) for a in read_jsonl(f)}


def assert_contracts(data, threads_dir: Path, ann_dir: Path, value_threshold: float | list[float], top_k: int = 0
                     ) -> None:
    """Every contract, including the ones that need the thread store and the annotations."""
    index = _store_index(threads_dir)
    assert ds.contract_violations(data, set(index)) == []
    values = _annotations(ann_dir)
    split_of: dict[str, str] = {}
    for name, splits in data.items():
        for split, recs in splits.items():
            for r in recs:
                assert split_of.setdefault(r["thread_id"], split) == split, f"{r['thread_id']} leaks across splits"
                own = index[r["thread_id"]]
                assert {*r["history_ids"], r["reply_id"], r["outcome_id"]} <= own, f"{name}/{r['id']} untraceable"
                assert ds.top_values(values[r["outcome_id"]]) == r["target_values"]
                if name == "tvd":
                    labels = prompts.parse_tvd_answer(r["messages"][-1]["content"])
                    assert labels is not None and len(set(labels)) == 3
                    assert set(labels) <= set(prompts.VALUE_CATEGORIES)
                if name == "rg_pairs":
                    assert r["chosen"] != r["rejected"]
                    assert r["rejected_id"] in own and r["rejected_id"] != r["reply_id"]
                    detected = ds.detected_values(values[r["rejected_id"]], value_threshold, top_k)
                    assert not set(detected) & set(r["target_values"]), f"{r['id']}: rejected shares values"


# ------------------------------------------------------------------------------------------------------ hand-built
@pytest.fixture(scope="module")
def hand_built(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    threads_dir, ann_dir = write_store(root, n_threads=10)
    cfg = datasets_cfg()
    ds.run(cfg, 11, threads_dir, ann_dir, root / "datasets")
    return ds.load_datasets(root / "datasets"), threads_dir, ann_dir, cfg.value_threshold


def test_contracts_hold_on_hand_built_records(hand_built):
    data, threads_dir, ann_dir, threshold = hand_built
    assert sum(len(r) for r in data["rg_pairs"].values()) > 0
    assert_contracts(data, threads_dir, ann_dir, threshold)


def _first(data, name):
    split = next(s for s, r in data[name].items() if r)
    return split, data[name][split][0]


@pytest.mark.parametrize("breach", ["leak", "bad_label", "dup_label", "chosen_is_rejected", "shared_value",
                                    "unknown_thread", "dup_id"])
def test_each_breach_is_caught(hand_built, breach):
    data = copy.deepcopy(hand_built[0])
    known = set(_store_index(hand_built[1]))
    if breach == "leak":
        split, rec = _first(data, "tvd")
        other = next(s for s in data["tvd"] if s != split)
        data["tvd"][other].append({**rec, "id": "x"})
    elif breach == "bad_label":
        _first(data, "tvd")[1]["messages"][-1]["content"] = "Values: Achievement; Kindness; Face"
    elif breach == "dup_label":
        _first(data, "tvd")[1]["messages"][-1]["content"] = "Values: Achievement; Achievement; Face"
    elif breach == "chosen_is_rejected":
        rec = _first(data, "rg_pairs")[1]
        rec["rejected"] = [dict(rec["chosen"][0], content=rec["chosen"][0]["content"].upper())]
    elif breach == "shared_value":
        rec = _first(data, "rg_pairs")[1]
        rec["rejected_values"] = [rec["target_values"][0]]
    elif breach == "unknown_thread":
        _first(data, "rg_sft")[1]["thread_id"] = "nope"
    elif breach == "dup_id":
        split, rec = _first(data, "rg_sft")
        data["rg_sft"][split].append(dict(rec))
    assert ds.contract_violations(data, known), f"{breach} not detected"


# ------------------------------------------------------------------------------------------------------ real output
def _has_shards(d: Path) -> bool:
    return any((d / "shards").glob("*.jsonl"))


def _build_from_mirror(root: Path) -> tuple[Path, Path]:
    """Thread store + annotations from the mirror's r/offmychest table through the crawl and annotate code."""
    from tasks import annotate
    from tasks.crawl import crawl, records

    p = load_params()
    table = paths.mirror_dir() / "reddit-offmychest-threads" / "offmychest.csv"
    models = [paths.ROOT / p.annotate.value_model, paths.ROOT / p.annotate.emotion_model]
    if not table.is_file():
        pytest.skip(f"{table} not found: set {paths.MIRROR_ENV} to the public-data mirror")
    if not all(m.is_dir() for m in models):
        pytest.skip(f"annotator models {[str(m) for m in models]} absent: run `dvc repro train_value_detector "
                    "train_emotion` (or `dvc repro annotate`) first")
    threads_dir, ann_dir = root / "threads", root / "annotated"
    # 10 threads (as the e2e micro profile): annotating all 30 would take minutes on 2 shared cores.
    crawl.run(p.crawl.model_copy(update={"max_threads": 10}), [table], [], threads_dir,
              records.pseudonymiser_from_env(True, p.seed))
    m = annotate.load_models(*(str(x) for x in models))
    for shard in sorted((threads_dir / "shards").glob("*.jsonl")):
        annotate.run_shard(shard, ann_dir / "shards" / shard.name, m, p.annotate)
    return threads_dir, ann_dir


@pytest.fixture(scope="module")
def real_output(tmp_path_factory):
    """The stage's real output: data/datasets if built; else the core on data/threads + data/annotated; else
    a store built here from the mirror through the crawl and annotate code (skips when mirror or models lack)."""
    threads_dir, ann_dir = ds.THREADS_DIR, ds.ANNOTATED_DIR
    p = load_params()
    out = ds.OUT_DIR
    if not (_has_shards(threads_dir) and _has_shards(ann_dir)):
        threads_dir, ann_dir = _build_from_mirror(tmp_path_factory.mktemp("mirror"))
        out = tmp_path_factory.mktemp("real") / "datasets"
        ds.run(p.datasets, p.seed, threads_dir, ann_dir, out)
    elif not (out / "stats.json").is_file():
        out = tmp_path_factory.mktemp("real") / "datasets"
        ds.run(p.datasets, p.seed, threads_dir, ann_dir, out)
    return ds.load_datasets(out), threads_dir, ann_dir, p.datasets, out


@pytest.mark.mirror
@pytest.mark.slow  # seconds when data/ holds the DVC outputs; ~3.5 min when it must crawl + annotate the mirror
def test_contracts_hold_on_real_output(real_output):
    data, threads_dir, ann_dir, _, out = real_output
    # The thresholds the stage used (the detector's, or the fixed one) are recorded in its stats.
    stats = read_json(out / "stats.json")
    assert_contracts(data, threads_dir, ann_dir, stats["value_thresholds"], stats["value_top_k"])


@pytest.mark.mirror
@pytest.mark.slow
def test_real_output_counts_are_consistent(real_output):
    data, *_, out = real_output
    stats = read_json(out / "stats.json")
    for name in ds.DATASETS:
        assert stats[name]["size"] == {s: len(r) for s, r in data[name].items()}
    ex = stats["extraction"]
    assert ex["op_replies_positive"] <= ex["op_replies_on_path"] <= ex["op_replies"]
    assert stats["tvd"]["total"] + sum(stats["tvd"]["dropped"].values()) == ex["op_replies_positive"]
