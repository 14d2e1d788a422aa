"""`esvr gpu plan`: hours from measured throughput only, rows from built datasets when present."""

from __future__ import annotations

import json

from tasks.common.config import load_profile
from tasks.ops import gpu_plan


def test_plan_uses_measured_throughput_and_says_what_is_unmeasured(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "gpu_smoke_x.json").write_text(json.dumps({"device": "NVIDIA H200", "sft_tokens_per_second": 4000.0,
                                                      "dpo_tokens_per_second": 2000.0}))
    p = gpu_plan.plan(load_profile("paper"), data=tmp_path / "data", results=res)
    tvd = p["stages"]["train_tvd"]
    assert (tvd["rows"], tvd["passes"], tvd["tokens"]) == (20000, 2.0, 20000 * 2 * 400)
    assert tvd["gpu_hours"] == round(16_000_000 / 4000 / 3600, 3)
    assert p["stages"]["train_rg_dpo"]["gpu_hours"] == round(15000 * 1000 / 2000 / 3600, 3)
    assert p["stages"]["annotate"]["gpu_hours"] is None and "make gpu-smoke" in p["stages"]["annotate"]["why"]
    # a built dataset wins over the profile's expectation
    (tmp_path / "data" / "datasets" / "tvd").mkdir(parents=True)
    (tmp_path / "data" / "datasets" / "tvd" / "train.jsonl").write_text("{}\n" * 7)
    assert gpu_plan.plan(load_profile("paper"), data=tmp_path / "data", results=res)["stages"]["train_tvd"]["rows"] == 7
    # no measurement: no figure
    empty = gpu_plan.plan(load_profile("paper"), data=tmp_path / "data", results=tmp_path / "none")
    assert empty["throughput"] is None and empty["gpu_hours_measured_stages"] is None
    assert "none measured" in gpu_plan.table(empty)
