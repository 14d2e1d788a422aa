"""tasks/datasets.py pure core on hand-built threads (tests/dataset_builders.py): paths, positivity, labels,
rejected filtering, splits, de-duplication, length filters, and run() writing the three datasets."""

from __future__ import annotations

import copy

import pytest

from tasks import datasets as ds
from tasks.common.io import read_json
from tasks.domain import prompts
from tests.dataset_builders import save_tiny_tokenizer, thread, values, write_store
from tests.params import datasets_cfg

CFG = datasets_cfg()


def ann_map(anns):
    return {a["id"]: a for a in anns}


def test_clean_text():
    assert ds.clean_text("a &amp; b\u200b\r\n\r\n\r\n\r\nc  ") == "a & b\n\nc"
    assert ds.clean_text("[removed]") == "" and ds.clean_text(None) == ""


@pytest.mark.parametrize(
    ("rule", "p", "prev", "expected"),
    [("threshold", 0.6, 0.9, True), ("threshold", 0.4, 0.0, False), ("increase", 0.4, 0.25, True),
     ("increase", 0.9, 0.85, False), ("increase", 0.9, None, False), ("either", 0.3, 0.1, True),
     ("either", 0.3, 0.25, False), ("both", 0.6, 0.55, False), ("both", 0.6, 0.4, True)],
)
def test_positivity_rule(rule, p, prev, expected):
    cfg = datasets_cfg(positivity_rule=rule, positivity_threshold=0.5, positivity_min_increase=0.1)
    assert ds.is_positive(p, prev, cfg) is expected


def test_top_values_breaks_ties_in_taxonomy_order():
    probs = [0.0] * 20
    probs[4] = probs[2] = probs[7] = probs[9] = 0.5
    assert ds.top_values(probs) == ["Stimulation", "Achievement", "Face"]
    assert ds.top_values(values("Hedonism", "Face", "Tradition")) == ["Hedonism", "Face", "Tradition"]


def test_extract_thread_follows_only_alternating_one_commenter_paths():
    th, anns = thread("t")
    res = ds.extract_thread(th, ann_map(anns), CFG, seed=1)
    c = res.counters
    assert (c["op_replies"], c["op_replies_on_path"], c["op_replies_candidates"]) == (6, 3, 3)
    assert (c["op_replies_not_on_path"], c["op_replies_unreachable"]) == (2, 1)
    by_outcome = {e["outcome_id"]: e for e in res.examples}
    assert set(by_outcome) == {"t-t1_o2", "t-t1_o3", "t-t1_ob"}  # candidates; the positivity rule comes later
    assert {o for o, e in by_outcome.items() if ds.is_positive(e["positivity"], e["positivity_prev"], CFG)} == {
        "t-t1_o2", "t-t1_ob"}
    e = by_outcome["t-t1_o2"]
    assert e["target_values"] == ["Achievement", "Self-direction: action", "Stimulation"]
    assert [r for r, _ in e["history"]] == ["seeker"] and e["reply_id"] == "t-t1_a1"
    # a2 and e1 share Achievement, r1 is [removed], a1 is the chosen reply: only c1, b1, d1 may be rejected.
    assert {r["id"] for r in e["rejected"]} == {"t-t1_c1", "t-t1_b1", "t-t1_d1"}  # all kept as a seeded pool
    for ex in res.examples:
        for r in ex["rejected"]:
            assert not set(r["values"]) & set(ex["target_values"])


def test_deeper_path_history_and_increase_rule():
    th, anns = thread("t")
    a = ann_map(anns)
    a["t-t1_o3"]["positivity"] = 0.45  # below threshold, but not above o2 (0.8): still negative
    cfg = datasets_cfg(positivity_rule="increase", positivity_min_increase=0.1)
    count = lambda m, g: ds.estimate_tokens(m, g, 4.0)  # noqa: E731
    def positives(): return {r["outcome_id"] for r in ds.assemble(ds.extract_thread(th, a, cfg, 1).examples, cfg, 0,
                                                                    count)[0]["tvd"]["train"]}
    assert "t-t1_o3" not in positives()
    a["t-t1_o2"]["positivity"] = 0.2  # now o3 rose by 0.25 over o2
    assert "t-t1_o3" in positives()
    ex = {e["outcome_id"]: e for e in ds.extract_thread(th, a, cfg, 1).examples}["t-t1_o3"]
    assert [r for r, _ in ex["history"]] == ["seeker", "supporter", "seeker"]
    assert ex["history_ids"] == ["t-t3_p", "t-t1_a1", "t-t1_o2"] and ex["reply_id"] == "t-t1_a2"


def test_rejected_sample_is_seeded_and_missing_annotations_are_counted():
    th, anns = thread("t")
    r1 = ds.extract_thread(th, ann_map(anns), CFG, seed=1).examples
    assert r1 == ds.extract_thread(th, ann_map(anns), CFG, seed=1).examples
    a = ann_map(anns)
    del a["t-t1_ob"]
    res = ds.extract_thread(th, a, CFG, seed=1)
    assert res.counters["skipped_missing_annotation"] == 1 and res.counters["utterances_without_annotation"] == 1


def test_assign_splits_fills_every_split_and_is_seeded():
    weights = {f"t{i}": w for i, w in enumerate([40, 5, 3, 3, 2, 2, 1, 1, 1, 1])}
    fr = {"train": 0.7, "validation": 0.15, "test": 0.15}
    a = ds.assign_splits(weights, fr, seed=3)
    assert a == ds.assign_splits(weights, fr, seed=3)
    assert set(a) == set(weights) and set(a.values()) == set(fr)
    assert any(ds.assign_splits(weights, fr, seed=s) != a for s in range(4, 12))
    assert set(ds.assign_splits({"x": 1, "y": 1, "z": 1}, fr, seed=0).values()) == set(fr)


def _examples(n=6, positive_only=True):
    out = []
    for i in range(n):
        th, anns = thread(f"th{i}")
        out += ds.extract_thread(th, ann_map(anns), CFG, seed=0).examples
    return [e for e in out if not positive_only or ds.is_positive(e["positivity"], e["positivity_prev"], CFG)]


def test_assemble_formats_contract_records_and_dedups():
    exs = _examples()
    dup = copy.deepcopy(exs[0])
    dup["outcome_id"] += "-copy"  # same text, different source: a repost
    out, stats = ds.assemble([*exs, dup], CFG, 0, lambda m, g: ds.estimate_tokens(m, g, 4.0))
    assert stats["tvd"]["total"] == len(exs) and stats["tvd"]["dropped"] == {"duplicate": 1}
    assert stats["rg_pairs"]["total"] == 2 * len(exs)
    assert ds.contract_violations(out) == []
    rec = out["tvd"]["train"][0] if out["tvd"]["train"] else next(r for s in out["tvd"].values() for r in s)
    assert rec["messages"][:-1] == prompts.tvd_messages(_history_of(exs, rec["outcome_id"]))
    assert sum(stats["tvd"]["label_distribution"].values()) == 3 * len(exs)
    assert stats["rg_pairs"]["pairs_per_post"]["mean"] == 4.0


def _history_of(exs, outcome_id):
    return next(e["history"] for e in exs if e["outcome_id"] == outcome_id)


def test_length_filter_drops_and_counts_with_a_real_tokenizer(tmp_path):
    count, desc = ds.make_token_counter(save_tiny_tokenizer(tmp_path / "tok"), 4.0)
    assert desc.startswith("tokenizer:")
    exs = _examples(2)
    rec = ds.format_records(exs[0])["tvd"][0]
    n_prompt = count(rec["messages"][:-1], True)
    n_full = count(rec["messages"], False)
    assert n_full > n_prompt > 20
    tight = datasets_cfg(max_length=n_prompt + 4, min_answer_tokens=8)
    assert ds.length_check("tvd", rec, count, tight.max_length, tight.min_answer_tokens) == "prompt_leaves_no_room"
    assert ds.length_check("tvd", rec, count, n_full - 1, 1) == "answer_truncated"
    assert ds.length_check("tvd", rec, count, n_full, 1) is None
    _, stats = ds.assemble(exs, datasets_cfg(max_length=n_prompt + 4), 0, count)
    assert stats["tvd"]["total"] == 0 and stats["tvd"]["dropped"]["prompt_leaves_no_room"] >= 1


def test_token_counter_falls_back_to_the_documented_estimate(tmp_path, caplog):
    count, desc = ds.make_token_counter(tmp_path / "absent", 4.0)
    assert desc == "estimate:chars/4.0" and "absent" in caplog.text
    assert count([{"role": "user", "content": "x" * 40}], True) == 10 + 4 + 3


def test_run_writes_splits_cards_and_stats(tmp_path):
    threads_dir, ann_dir = write_store(tmp_path, n_threads=8)
    out = tmp_path / "datasets"
    report = ds.run(CFG, 7, threads_dir, ann_dir, out)
    assert report["extraction"]["op_replies_positive"] == 16
    assert report["extraction"]["positive_rate_on_path"] == round(2 / 3, 4)
    for name in ds.DATASETS:
        assert (out / name / "DATA_CARD.md").read_text().startswith(f"# Data card: {name}")
        assert {p.stem for p in (out / name).glob("*.jsonl")} == set(CFG.splits)
    data = ds.load_datasets(out)
    assert ds.contract_violations(data, {f"th{i:02d}" for i in range(8)}) == []
    assert read_json(out / "stats.json")["tvd"]["total"] == 16
    limited = ds.run(datasets_cfg(limit_threads=3), 7, threads_dir, ann_dir, tmp_path / "d2")
    assert limited["extraction"]["threads"] == 3


def test_run_fails_on_missing_inputs_and_bad_annotations(tmp_path):
    with pytest.raises(ds.DatasetsError, match="crawl stage"):
        ds.run(CFG, 0, tmp_path / "none", tmp_path / "none2", tmp_path / "o")
    threads_dir, ann_dir = write_store(tmp_path, n_threads=2, per_shard=2)
    (ann_dir / "shards" / "shard000.jsonl").write_text("")
    with pytest.raises(ds.DatasetsError, match="max_bad_fraction"):
        ds.run(CFG, 0, threads_dir, ann_dir, tmp_path / "o")


def test_an_over_long_rejected_comment_gives_way_to_a_spare():
    th, anns = thread("t")
    ex = next(e for e in ds.extract_thread(th, ann_map(anns), CFG, 1).examples if e["outcome_id"] == "t-t1_o2")
    long_id = ex["rejected"][0]["id"]
    ex["rejected"][0]["text"] = "word " * 2000
    count = lambda m, g: ds.estimate_tokens(m, g, 4.0)  # noqa: E731
    out, stats = ds.assemble([ex], datasets_cfg(max_rejected_per_example=2), 0, count)
    pairs = [r for recs in out["rg_pairs"].values() for r in recs]
    assert len(pairs) == 2 and long_id not in {p["rejected_id"] for p in pairs}
    assert stats["rg_pairs"]["dropped"] == {"rejected_truncated": 1}
    trimmed = ds.extract_thread(th, ann_map(anns), datasets_cfg(max_turn_chars=20), 1)
    assert trimmed.counters["history_turns_trimmed"] == 5  # P for o2 and ob; P, a1, o2 for o3
    assert all(len(t) <= 22 for e in trimmed.examples for _, t in e["history"])


def test_trim_turn_cuts_at_a_word_boundary():
    assert ds.trim_turn("one two three four", 0) == "one two three four"
    assert ds.trim_turn("one two three four", 12) == "one two …"


def test_detector_thresholds_decide_what_a_rejected_comment_expresses(tmp_path):
    cfg = datasets_cfg(value_threshold="detector")
    with pytest.raises(ds.DatasetsError, match="thresholds.json"):
        ds.thresholds_of(cfg)
    with pytest.raises(ds.DatasetsError, match="20 categories"):
        ds.thresholds_of(cfg, {"labels": ["x"], "thresholds": [0.1]})
    det = {"labels": list(ds.VALUE_CATEGORIES), "thresholds": [0.5] * 20}
    det["thresholds"][ds.VALUE_CATEGORIES.index("Benevolence: caring")] = 0.95  # c1/b1 (caring 0.9) now express nothing
    th, anns = thread("t")
    strict = ds.extract_thread(th, ann_map(anns), cfg, 1, ds.thresholds_of(cfg, det))
    ob = {e["outcome_id"]: e for e in strict.examples}["t-t1_ob"]  # target includes Benevolence: caring
    assert "t-t1_c1" in {r["id"] for r in ob["rejected"]}
    default = {e["outcome_id"]: e for e in ds.extract_thread(th, ann_map(anns), CFG, 1).examples}["t-t1_ob"]
    assert "t-t1_c1" not in {r["id"] for r in default["rejected"]}
    with pytest.raises(ValueError):
        datasets_cfg(value_threshold=1.5)


def test_positivity_quantile_sets_the_threshold_from_the_corpus():
    exs = _examples(4, positive_only=False)  # per thread: o2 0.8, o3 0.3, ob 0.9
    count = lambda m, g: ds.estimate_tokens(m, g, 4.0)  # noqa: E731
    assert ds.positivity_threshold(datasets_cfg(), [0.1, 0.9]) == 0.5
    assert ds.positivity_threshold(datasets_cfg(positivity_quantile=0.5), [0.1, 0.2, 0.9]) == 0.2
    assert ds.positivity_threshold(datasets_cfg(positivity_quantile=0.25), [0.0, 1.0]) == 0.25
    cfg = datasets_cfg(positivity_rule="threshold", positivity_quantile=0.9)
    _, stats = ds.assemble(exs, cfg, 0, count)
    assert stats["positivity"]["candidates"] == 12 and stats["positivity"]["threshold"] == 0.9
    assert stats["positivity"]["positive"] == 4  # only the ob replies (0.9) reach the 90th percentile
    _, base = ds.assemble(exs, datasets_cfg(), 0, count)
    assert base["positivity"]["positive"] == 8 and base["positivity"]["positive_rate"] == round(8 / 12, 4)


def test_top_k_limits_what_a_comment_expresses():
    probs = values("Achievement", "Hedonism", "Face", "Tradition")
    assert ds.detected_values(probs, 0.25) == ["Hedonism", "Achievement", "Face", "Tradition"]
    assert ds.detected_values(probs, 0.25, top_k=2) == ["Hedonism", "Achievement"]
    assert ds.detected_values(probs, 0.87, top_k=2) == ["Achievement"]
