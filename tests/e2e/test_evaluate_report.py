"""The evaluation end to end in one process, every LLM role on the loopback server: the teacher variants and the
PPDPP-style planner on eval personas (paired seeds), the human ESConv row, judge + second judge + pairwise,
bootstrap statistics, one MLflow run per variant in `esvr-eval`, then the report — opened in a real headless
Chromium: no console errors, every image loads, both tables present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.common import config, tracking
from tasks.evaluate import evaluate, human, planner, report, runs
from tasks.llm.client import LLM, Role
from tests.fakes.mock_llm import MockServer
from tests.unit.test_eval_metrics import present

pytestmark = pytest.mark.slow  # ~250 loopback calls, a fresh MLflow store (~12 s of migrations), the report: ~40 s

TEACHER_VARIANTS = ("teacher", "teacher-values", "teacher-reference", "teacher-both", "ppdpp")
CONTRACT_METRICS = ("suggestion", "experience", "information", "overall", "intensity", "seeker_value",
                    "supporter_value")


def _personas(n):
    return [{"id": f"eval-{i}", "problem_type": "job crisis", "emotion_type": "anxiety", "initial_intensity": 4,
             "context": f"You are person {i}; your goal is a new job and you want to help your family."}
            for i in range(n)]


def _cfg():
    ev = config.load_profile("tiny").evaluate
    return ev.model_copy(update={"turns": 2, "bootstrap": ev.bootstrap.model_copy(update={"n": 200})})


def _llm(url, path):
    roles = {r: Role(r, url, "mock", 0.7, 100) for r in [*evaluate.ROLES, "judge_b"]}
    return LLM(roles, path, max_concurrency=8, max_reasks=2)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, mirror):
    tmp = tmp_path_factory.mktemp("evaluate")
    mp = pytest.MonkeyPatch()
    mp.setenv("ESVR_MLRUNS", str(tmp / "mlruns"))
    try:
        cfg = _cfg()
        active = {n: v for n, v in cfg.variants.items() if n in TEACHER_VARIANTS}
        esconv = mirror / "esconv"
        plan, plan_report = planner.fit(human.human_dialogues(esconv, "train", 60),
                                        human.human_dialogues(esconv, "valid", 30), 2, 5000, 1.0, 0)
        humans = human.human_dialogues(esconv, "test", 2)
        personas = _personas(3)
        with MockServer() as m:
            with tracking.stage_run("evaluate", "tiny", "esvr") as stage:
                rep = evaluate.run(_llm(m.url, tmp / "cache.sqlite"), evaluate.policies_for(active, plan), personas,
                                   humans, present, cfg, 1234, tmp / "progress")
                hits = m.state.hits
                variants = {n: v.model_dump() for n, v in active.items()}
                variants[evaluate.HUMAN] = {"kind": "human", "paper_row": None, "tables": ["main"]}
                common = {"turns": cfg.turns, "baseline": cfg.baseline,
                          **{f"planner.{k}": v for k, v in plan_report.items()}}
                ids = runs.log_variant_runs(rep, variants, cfg.experiment, stage.info.run_id, common,
                                            {"esvr.profile": "tiny"})
                runs.log_stage_summary(rep, plan_report, {"supporter-dpo": "not registered (test)"}, ids)
            # the same evaluation again: everything comes from the progress file and the response cache
            again = evaluate.run(_llm(m.url, tmp / "cache.sqlite"), evaluate.policies_for(active, plan), personas,
                                 humans, present, cfg, 1234, tmp / "progress")
            hits_again = m.state.hits - hits
        import mlflow

        # what the supporter's mine_pairs stage logs (its ΔR histograms and reward summaries), for the mining plot
        with tracking.stage_run("mine_pairs", "tiny", "esvr"):
            mlflow.log_dict({"value.delta_hist": {"counts": [3, 1, 0, 2], "edges": [0.0, 0.5, 1.0, 1.5, 2.0]}},
                            "mine_pairs.json")
            mlflow.log_metrics({"value.reward.mean": 0.7, "value.delta.p50": 0.5})
        summary = report.build(tmp / "report", cfg.experiment, "esvr", 1, root=tmp)
        yield {"report": rep, "again": again, "ids": ids, "hits_again": hits_again, "summary": summary,
               "dir": tmp / "report", "plan": plan_report, "personas": personas}
    finally:
        mp.undo()


def test_every_variant_talks_with_every_persona_on_the_same_seeker_seeds(evaluated):
    rep = evaluated["report"]
    for v in TEACHER_VARIANTS:
        ds = rep["dialogues"][v]
        assert [d["persona_id"] for d in ds] == [p["id"] for p in evaluated["personas"]]
        assert all(len(d["turns"]) == 5 for d in ds)  # fixed length: opening + 2 x (supporter, seeker)
    for i in range(3):  # the seeker's opening is one and the same for every variant of a persona
        assert len({rep["dialogues"][v][i]["turns"][0]["text"] for v in TEACHER_VARIANTS}) == 1
    both = rep["dialogues"]["teacher-both"][0]["turns"][1]
    base = rep["dialogues"]["teacher"][0]["turns"][1]
    assert both["target_values"] and both["reference"] and both["adopt_reference"] in ("Yes", "No")
    assert both["answer"].startswith("Issue and state:")  # the supporter format, reasoning shown in transcripts
    assert base["target_values"] is None and base["reference"] is None and "adopt_reference" not in base
    values_only = rep["dialogues"]["teacher-values"][0]["turns"][1]
    assert values_only["target_values"] and values_only["reference"] is None
    ref_only = rep["dialogues"]["teacher-reference"][0]["turns"][1]
    assert ref_only["reference"] and ref_only["target_values_shown"] is False
    planned = rep["dialogues"]["ppdpp"][0]["turns"][1]
    assert planned["strategy"] == planned["planned_strategy"]  # the schema allowed only the planned strategy
    assert 0.0 <= evaluated["plan"]["valid_accuracy"] <= 1.0


def test_statistics_and_judges(evaluated):
    rep = evaluated["report"]
    assert set(rep["scored"]) == {*TEACHER_VARIANTS, evaluate.HUMAN}
    for v, est in rep["estimates"].items():
        for m in CONTRACT_METRICS:
            e = est[m]
            n_expected = 2 if v == evaluate.HUMAN else 3
            if m != "intensity":
                assert e["n"] == n_expected, (v, m)
            if e["n"]:
                assert e["low"] <= e["mean"] <= e["high"]
        if v not in ("teacher", evaluate.HUMAN):
            assert est["overall.diff"]["n"] == 3
    assert "overall.diff" not in rep["estimates"]["teacher"]
    for row in rep["scored"]["teacher-both"]:
        assert 0 <= row["seeker_value"] <= 1 and 0 <= row["supporter_value"] <= 1
        assert all(1 <= row[d] <= 5 for d in ("suggestion", "experience", "information", "overall"))
        assert set(row["judge_b"]) == {"suggestion", "experience", "information", "overall"}
    assert set(rep["pairwise"]) == set(TEACHER_VARIANTS) - {"teacher"}
    rates = rep["pairwise"]["teacher-both"]["rates"]
    assert rates["n"] == 3 and rates["win"] + rates["tie"] + rates["loss"] == pytest.approx(1.0)
    assert set(rep["kappa"]) == {"suggestion", "experience", "information", "overall"}
    assert rep["kappa"]["overall"]["n"] == 5 * 3 + 2


def test_review_pairs_load_in_the_review_page(evaluated, tmp_path):
    from tasks.common.io import write_jsonl
    from tasks.review.pairs import load_pairs

    pairs = evaluate.review_pairs(evaluated["report"]["dialogues"], "teacher")
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    loaded = load_pairs(tmp_path / "pairs.jsonl")
    assert len(loaded) == 4 * 3  # 4 variants x 3 personas against the baseline
    assert {p["b"]["variant"] for p in loaded} == {"teacher"} and loaded[0]["context"] == "job crisis, anxiety"
    assert all("adopt_reference" not in t for p in loaded for t in p["a"]["turns"])


def test_a_second_evaluation_pays_nothing(evaluated):
    assert evaluated["hits_again"] == 0
    assert evaluated["again"]["estimates"] == evaluated["report"]["estimates"]


def test_one_mlflow_run_per_variant_with_the_contract_metrics(evaluated):
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("esvr-eval")
    found = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags[runs.VARIANT_TAG] for r in found) == sorted([*TEACHER_VARIANTS, evaluate.HUMAN])
    for r in found:
        assert r.info.status == "FINISHED"
        assert set(CONTRACT_METRICS) - {"intensity"} <= set(r.data.metrics)
        assert r.data.tags[runs.BATCH_TAG] == found[0].data.tags[runs.BATCH_TAG]
        files = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"summary.json", "per_dialogue.json", "dialogues.jsonl", "transcripts.md"} <= files
    teacher = next(r for r in found if r.data.tags[runs.VARIANT_TAG] == "teacher-both")
    assert "overall.diff" in teacher.data.metrics and "pairwise.win" in teacher.data.metrics


def test_report_files_and_tables(evaluated):
    out, s = evaluated["dir"], evaluated["summary"]
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert s["ablation_rows"] == 4 and s["main_rows"] == 3  # teacher-both, ppdpp, human
    assert 'id="ablation-table"' in html and 'id="main-table"' in html
    assert "src=\"http" not in html and "<script" not in html  # self-contained, nothing to fetch
    assert html.count("data:image/png;base64,") == s["figures"] == 4
    for text in (html, md):
        assert "4.03" in text and "0.36" in text  # the paper's GPT baseline: Sugg. and Supporter-Value
        assert "What this run can and cannot show" in text and evaluated["ids"]["teacher"] in text
        assert "adopt reference: " in text and "Judge-judge agreement" in text
        assert "supporter-dpo" in text and "not registered (test)" in text  # skipped variants and why
    assert (out / "figures" / "metrics.png").is_file() and "](figures/metrics.png)" in md
    assert (out / "figures" / "mining.png").is_file() and "mine_pairs: value.reward.mean" in html
    data = json.loads(json.dumps(s))
    assert data["variants"] == 6


def test_report_in_headless_chromium(evaluated):
    """Debian's chromium through playwright (the MLflow UI test's driver and flags): the page logs no console error
    and raises nothing, every image decodes, both tables have rows and the paper's columns."""
    from tests.e2e.test_mlflow_ui import CHROMIUM, FLAGS

    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian chromium not installed (.ci/run installs it)")
    problems: list[str] = []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
            page.goto((evaluated["dir"] / "report.html").as_uri(), wait_until="load")
            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            rows = {t: page.locator(f"#{t} tbody tr").count() for t in ("ablation-table", "main-table")}
            heads = page.locator("#ablation-table thead th").all_inner_texts()
        finally:
            browser.close()
    assert not problems, problems
    assert len(images) == evaluated["summary"]["figures"] and all(c and w > 0 and h > 0 for c, w, h in images)
    assert rows == {"ablation-table": 4, "main-table": 3}
    assert "Sugg.↑" in heads and "Supporter-V↑" in heads
