"""The report's tables and renderings from a hand-built batch (no MLflow): rows land in the tables their tags name,
ours beside the paper's number, missing numbers shown as missing, the note follows the profile."""

from __future__ import annotations

import yaml

from tasks.common.tracking import lock_entry_hash
from tasks.evaluate import report
from tasks.evaluate.runs import Batch, VariantRun


def _run(name, kind, paper_row, tables, overall, lock="abc"):
    est = {"overall": {"mean": overall, "low": overall - 0.5, "high": overall + 0.5, "n": 3},
           "seeker_value": {"mean": 0.25, "low": 0.0, "high": 0.5, "n": 3}}
    if name != "teacher":
        est["overall.diff"] = {"mean": 0.5, "low": -0.1, "high": 1.1, "n": 3}
    return VariantRun(name, f"run-{name}", "FINISHED", {"dialogues": 3.0, "adoption_rate": 0.5},
                      {"turns": "2", "baseline": "teacher"},
                      {"esvr.kind": kind, "esvr.paper_row": paper_row or "", "esvr.tables": ",".join(tables),
                       "esvr.profile": "tiny", "dvc.lock_hash": lock},
                      {"estimates": est, "per_dialogue": [{"seeker_value": 0.0}, {"seeker_value": 0.5}]})


def _batch(lock="abc"):
    return Batch("batch-1", "esvr-eval", [
        _run("teacher", "teacher", "gpt-baseline", ["ablation"], 3.0, lock),
        _run("teacher-both", "teacher", "plus-both", ["ablation", "main"], 3.5, lock),
        _run("human-esconv", "human", None, ["main"], 4.0, lock)], None)


def test_tables_put_ours_beside_the_paper():
    paper = report.load_paper()
    t = report.tables(_batch(), paper)
    assert [r["variant"] for r in t["ablation"]] == ["teacher", "teacher-both"]
    assert [r["variant"] for r in t["main"]] == ["teacher-both", "human-esconv"]
    cell = t["ablation"][0]["cells"]["overall"]
    assert cell["ours"]["mean"] == 3.0 and cell["paper"] == 4.44
    assert t["main"][1]["cells"]["overall"]["paper"] is None  # the paper has no human row
    assert t["ablation"][0]["cells"]["suggestion"]["ours"]["mean"] is None  # not estimated: shown as missing
    assert report.fmt_est(cell["ours"], "overall") == "3.00 [2.50, 3.50]"
    diffs = report.diffs(_batch())
    assert [d["variant"] for d in diffs] == ["teacher-both", "human-esconv"]


def test_paper_file_is_complete_and_sourced():
    paper = report.load_paper()
    assert "arXiv:2501.17182" in paper["source"]
    assert paper["rows"]["es-vr-dpo"]["supporter_value"] == 0.56 and paper["rows"]["es-vr-sft"]["suggestion"] is None
    assert set(paper["metrics"]) == set(report.METRICS)


def test_renderings_and_lock_status(tmp_path):
    batch = _batch(lock_entry_hash({"cmd": "esvr stage evaluate"}))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"evaluate": {"cmd": "esvr stage evaluate"}}}))
    ctx = report.context(batch, report.load_paper(), tmp_path, {}, "not run")
    assert ctx["lock"]["matches"] == "yes"
    html = report.render_html(ctx, {"x.png": ("a caption", b"\x89PNG")})
    md = report.render_markdown(ctx, {"x.png": ("a caption", b"\x89PNG")}, "figures")
    for key in ("ablation", "main"):
        assert f'id="{key}-table"' in html
    assert "paper 4.44" in html and "3.00 [2.50, 3.50] (4.44)" in md
    assert "data:image/png;base64," in html and "](figures/x.png)" in md
    assert "Cannot show" in html and "tiny" in md
    other = report.context(_batch("stale"), report.load_paper(), tmp_path, {}, "")
    assert other["lock"]["matches"].startswith("no")


def test_mining_distributions_are_found_in_histograms_and_samples():
    out: dict = {}
    report._collect({"value.delta_hist": {"counts": [1, 2], "edges": [0.0, 0.5, 1.0]},
                     "nested": {"emotion_reward": [0.1, 0.2, 0.9]}, "other": [1, 2, 3],
                     "value.delta.mean": 0.4}, "mine_pairs", out)
    assert set(out) == {"mine_pairs.value.delta_hist", "mine_pairs.nested.emotion_reward"}
    assert out["mine_pairs.value.delta_hist"]["counts"] == [1.0, 2.0]
    assert sum(out["mine_pairs.nested.emotion_reward"]["counts"]) == 3
