"""Data contracts of data/datasets (issue Datasets §7), on hand-built records AND on the stage's real output.

* no thread in two splits; * every TVD label is 1-3 distinct valid categories, the values present in the outcome
  by the presence rule, ranked by lift (re-derived from the texts and annotations); * chosen != rejected;
* a rejected comment's present values share none with its target values (re-derived from the annotations, not only
  the record's own field); * every record traces to its thread id and to utterances of that thread.

Real output: the project's data/datasets when `dvc repro datasets` has run; otherwise the stage core is run here on
the project's data/threads + data/annotated (crawl + annotate outputs built from the mirror). Skips say which.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tasks import datasets as ds
from tasks.annotators.presence import PresenceRule
from tasks.common.config import load_params
from tasks.common.io import read_json, read_jsonl
from tasks.domain import prompts
from tests.dataset_builders import write_rule, write_store
from tests.params import datasets_cfg


def _store_index(threads_dir: Path) -> dict[str, set[str]]:
    """thread id → its utterance ids."""
    return {t["thread_id"]: {u["id"] for u in t["utterances"]}
            for f in sorted((threads_dir / "shards").glob("*.jsonl")) for t in read_jsonl(f)}


def _annotations(ann_dir: Path) -> dict[str, list[float]]:
    return {a["id"]: a["values"] for f in sorted((ann_dir / "shards").glob("*.jsonl")) for a in read_jsonl(f)}


def _texts(threads_dir: Path) -> dict[str, str]:
    return {u["id"]: ds.clean_text(u.get("text")) for f in sorted((threads_dir / "shards").glob("*.jsonl"))
            for t in read_jsonl(f) for u in t["utterances"]}


def assert_contracts(data, threads_dir: Path, ann_dir: Path, stats: dict) -> None:
    """Every contract, including the ones that need the thread store and the annotations; the presence rule and the
    base rates are the ones the stage recorded in its stats."""
    index = _store_index(threads_dir)
    assert ds.contract_violations(data, set(index)) == []
    values = _annotations(ann_dir)
    texts = _texts(threads_dir)
    rule, rates = PresenceRule.from_dict(stats["presence"]), stats["base_rates"]
    split_of: dict[str, str] = {}
    for name, splits in data.items():
        for split, recs in splits.items():
            for r in recs:
                assert split_of.setdefault(r["thread_id"], split) == split, f"{r['thread_id']} leaks across splits"
                own = index[r["thread_id"]]
                assert {*r["history_ids"], r["reply_id"], r["outcome_id"]} <= own, f"{name}/{r['id']} untraceable"
                target = ds.target_values(texts[r["outcome_id"]], values[r["outcome_id"]], rule, rates)
                assert target == r["target_values"] and 1 <= len(target) <= prompts.TVD_K
                if name == "tvd":
                    labels = prompts.parse_tvd_answer(r["messages"][-1]["content"])
                    assert labels == target and len(set(labels)) == len(labels)
                    assert set(labels) <= set(prompts.VALUE_CATEGORIES)
                if name == "rg_pairs":
                    assert r["chosen"] != r["rejected"]
                    assert r["rejected_id"] in own and r["rejected_id"] != r["reply_id"]
                    present = ds.present_values(texts[r["rejected_id"]], values[r["rejected_id"]], rule)
                    assert present == r["rejected_values"]
                    assert not set(present) & set(r["target_values"]), f"{r['id']}: rejected shares values"


# ------------------------------------------------------------------------------------------------------ hand-built
@pytest.fixture(scope="module")
def hand_built(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    threads_dir, ann_dir = write_store(root, n_threads=10)
    cfg = datasets_cfg(value_detector=str(write_rule(root / "vd")))
    stats = ds.run(cfg, 11, threads_dir, ann_dir, root / "datasets")
    return ds.load_datasets(root / "datasets"), threads_dir, ann_dir, stats


def test_contracts_hold_on_hand_built_records(hand_built):
    data, threads_dir, ann_dir, stats = hand_built
    assert sum(len(r) for r in data["rg_pairs"].values()) > 0
    assert_contracts(data, threads_dir, ann_dir, stats)


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


@pytest.fixture(scope="module")
def real_output(tmp_path_factory, request):
    """The stage's real output: data/datasets if built; else the core on data/threads + data/annotated; else
    a store built from the mirror through the crawl and annotate code with the session's small annotators
    (tests/conftest.py `mirror_store`), and the datasets core on it with the small detector's presence rule."""
    threads_dir, ann_dir = ds.THREADS_DIR, ds.ANNOTATED_DIR
    p = load_params()
    out = ds.OUT_DIR
    if not (_has_shards(threads_dir) and _has_shards(ann_dir)):
        store = request.getfixturevalue("mirror_store")
        threads_dir, ann_dir = store["threads"], store["annotated"]
        out = tmp_path_factory.mktemp("real") / "datasets"
        ds.run(p.datasets.model_copy(update={"value_detector": str(store["value_detector"])}), p.seed, threads_dir,
               ann_dir, out)
    elif not (out / "stats.json").is_file():
        out = tmp_path_factory.mktemp("real") / "datasets"
        ds.run(p.datasets, p.seed, threads_dir, ann_dir, out)
    return ds.load_datasets(out), threads_dir, ann_dir, p.datasets, out


@pytest.mark.mirror
@pytest.mark.slow  # seconds when data/ holds the DVC outputs; else the session's small annotators + ~1 min
def test_contracts_hold_on_real_output(real_output):
    data, threads_dir, ann_dir, _, out = real_output
    # The thresholds the stage used (the detector's, or the fixed one) are recorded in its stats.
    stats = read_json(out / "stats.json")
    assert_contracts(data, threads_dir, ann_dir, stats)


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
