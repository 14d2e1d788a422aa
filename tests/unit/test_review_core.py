"""Review page core: the pairs format (errors name file, line, key), the store (one verdict per rater and pair,
left/right mapped back to a/b), and the results (hand-computed win rates, Krippendorff's alpha on its textbook
example, a seeded cluster bootstrap, one MLflow run in the evaluation experiment)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tasks.review.db import ReviewDB
from tasks.review.pairs import PairsError, load_pairs
from tasks.review.results import bootstrap_ci, krippendorff_alpha_nominal, metrics_of, summarise


def pair(pid: str, va: str = "x", vb: str = "y") -> dict:
    return {"pair_id": pid, "a": {"variant": va, "turns": [{"role": "seeker", "text": "hi"}, {"role": "supporter",
                                                                                             "text": f"{va} says"}]},
            "b": {"variant": vb, "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "b"}]}}


def write(path, objs):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


def test_pairs_roles_are_normalised(tmp_path):
    (p,) = load_pairs(write(tmp_path / "p.jsonl", [pair("1")]))
    assert [t["role"] for t in p["b"]["turns"]] == ["seeker", "supporter"]


@pytest.mark.parametrize("bad,match", [
    ("{not json", r"p\.jsonl:2: not valid JSON"),
    ({"pair_id": "2", "a": {"variant": "x", "turns": []}, "b": {}}, r"p\.jsonl:2: a\.turns"),
    ({**pair("2"), "b": {"variant": "y", "turns": [{"role": "bot", "text": "x"}]}},
     r"p\.jsonl:2: b\.turns\[0\]\.role"),
    (pair("2", "x", "x"), "both variant 'x'"),
    (pair("1"), r"p\.jsonl:2: pair_id '1' already on line 1"),
    ({"a": {}, "b": {}}, r"p\.jsonl:2: pair_id"),
])
def test_pairs_errors_name_line_and_key(tmp_path, bad, match):
    with pytest.raises(PairsError, match=match):
        load_pairs(write(tmp_path / "p.jsonl", [pair("1"), bad]))


def test_one_verdict_per_rater_and_pair_and_sides_map_back(tmp_path):
    db = ReviewDB(tmp_path / "r.db", 5000)
    db.load_pairs([pair(str(i)) for i in range(40)])
    rid, token = db.invite("t", 16)
    rater = db.rater(token)
    assert rater and rater.rater_id == rid and db.rater("wrong") is None and db.rater("") is None
    sides = [rater.a_left(str(i)) for i in range(40)]
    assert 5 < sum(sides) < 35  # randomised per pair
    choices = {"validating_challenges": "left", "positive_aspects": "right", "overall": "tie"}
    for i in range(40):
        assert db.record(rater, str(i), choices, "c") is True
    assert db.record(rater, "0", {**choices, "overall": "left"}, "again") is False  # first verdict stands
    vs = {v["pair_id"]: v for v in db.verdicts()}
    assert len(vs) == 40 and vs["0"]["overall"] == "tie" and vs["0"]["comment"] == "c"
    for i in range(40):
        v = vs[str(i)]
        assert v["validating_challenges"] == ("a" if sides[i] else "b")
        assert v["positive_aspects"] == ("b" if sides[i] else "a")
    with pytest.raises(ValueError, match="overall"):
        db.record(rater, "1", {**choices, "overall": "a"}, "")
    nxt, done, total = db.next_pair(rater)
    assert nxt is None and (done, total) == (40, 40)


def test_changed_pair_with_verdicts_is_refused(tmp_path):
    from tasks.review.db import ReviewDBError

    db = ReviewDB(tmp_path / "r.db", 5000)
    assert db.load_pairs([pair("1")]) == {"added": 1, "unchanged": 0, "replaced": 0}
    assert db.load_pairs([pair("1")])["unchanged"] == 1
    _, token = db.invite("t", 16)
    db.record(db.rater(token), "1", dict.fromkeys(("validating_challenges", "positive_aspects", "overall"), "tie"), "")
    changed = pair("1")
    changed["a"]["turns"][1]["text"] = "edited"
    with pytest.raises(ReviewDBError, match="new pair_id"):
        db.load_pairs([changed])


def verdict(rater, pid, winner, va="esvr", vb="gpt"):
    lab = {va: "a", vb: "b", "tie": "tie"}[winner]
    return {"rater_id": rater, "pair_id": pid, "variant_a": va, "variant_b": vb,
            "validating_challenges": lab, "positive_aspects": lab, "overall": lab}


def test_win_rate_counts_ties_half():
    vs = [verdict("r1", "p1", "esvr"), verdict("r2", "p1", "esvr"), verdict("r1", "p2", "tie"),
          verdict("r1", "p3", "gpt", va="gpt", vb="esvr")]
    s = summarise(vs, 500, 0.95, 0)
    (row,) = s["criteria"]["overall"]["matchups"]
    assert (row["variant"], row["opponent"]) == ("esvr", "gpt")
    assert (row["wins"], row["ties"], row["losses"], row["pairs"]) == (2, 1, 1, 3)
    assert row["win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert 0.0 <= row["ci_low"] <= row["win_rate"] <= row["ci_high"] <= 1.0
    assert s["verdicts"] == 4 and s["raters"] == 2 and s["pairs_judged"] == 3
    assert summarise(vs, 500, 0.95, 0) == s  # seeded
    m = metrics_of(s)
    assert m["review.overall.esvr_vs_gpt.win_rate"] == pytest.approx(0.625)


def test_krippendorff_alpha_textbook_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, nominal alpha = 0.743
    coders = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
              [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
              [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
              [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[str(c[u]) for c in coders if c[u] is not None] for u in range(12)]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=0.001)
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b"]]) == 1.0
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]) is None  # no variation: undefined, not 1
    assert krippendorff_alpha_nominal([["a", "b"], ["b", "a"]]) < 0


def test_cluster_bootstrap_interval_widens_with_fewer_pairs():
    rng = np.random.default_rng(0)
    few = bootstrap_ci(np.array([1.0, 0.0, 1.0, 0.0]), np.ones(4), 2000, 0.95, rng)
    many = bootstrap_ci(np.array([1.0, 0.0] * 200), np.ones(400), 2000, 0.95, rng)
    assert few[1] - few[0] > many[1] - many[0]
    assert math.isclose((many[0] + many[1]) / 2, 0.5, abs_tol=0.03)


def test_results_are_logged_to_mlflow(mlflow_store):
    import mlflow
    from mlflow import MlflowClient

    from tasks.review.results import log_results

    vs = [verdict("r1", "p1", "esvr"), verdict("r2", "p1", "gpt")]
    s = summarise(vs, 200, 0.9, 1)
    run_id = log_results(s, vs, "esvr-eval", "tiny", {"review": {"ci_level": 0.9}}, mlflow_store / "x.db")
    run = MlflowClient().get_run(run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "esvr-eval"
    assert run.data.metrics["review.verdicts"] == 2.0
    assert run.data.metrics["review.overall.percent_agreement"] == 0.0
    arts = {a.path for a in MlflowClient().list_artifacts(run_id, "review")}
    assert arts == {"review/results.json", "review/verdicts.jsonl"}
