"""The four training stages through `esvr stage` (Prefect flow + MLflow run + metrics file) in a clean project copy,
on micro params and stand-in upstream outputs in the contract formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tasks.common.config import _deep_merge
from tests.conftest import run_cli
from tests.model import synth

MICRO = Path(__file__).with_name("micro.yaml")


@pytest.mark.slow
def test_training_stages_end_to_end(project_copy, mirror):
    root = project_copy
    rows = synth.goemotions(mirror, 200)
    synth.write_threads(root / "data", rows)
    synth.write_datasets(root / "data", rows)
    tiny = yaml.safe_load((root / "profiles" / "tiny.yaml").read_text())
    micro = {k: v for k, v in yaml.safe_load(MICRO.read_text()).items() if k in ("base_model", "train")}
    (root / "params.yaml").write_text(yaml.safe_dump(_deep_merge(tiny, micro), sort_keys=False))
    for stage in ("base_model", "train_tvd", "train_rg_sft", "train_rg_dpo"):
        r = run_cli(["esvr", "stage", stage], cwd=root, timeout=600)
        assert r.returncode == 0, f"{stage} failed:\n{r.stderr[-3000:]}"
        assert (root / "metrics" / f"{stage}.json").is_file()
    assert (root / "models" / "tokenizer" / "chat_template.jinja").is_file()
    tvd = json.loads((root / "metrics" / "train_tvd.json").read_text())
    assert {"tvd.f1", "baseline.f1", "malformed"} <= set(tvd) and tvd["n_test"] == 8
    dpo = json.loads((root / "metrics" / "train_rg_dpo.json").read_text())
    assert {"sft.eval_loss", "dpo.eval_loss", "dpo.reward_accuracy", "dpo.reward_margin", "sft.pref_accuracy"} <= set(dpo)
    assert dpo["value_hit_skipped"] == 1  # no detector in the copy: skipped with a logged reason, not failed
    # Registry: later stages load these aliases.
    r = run_cli(["python", "-c", (
        "from tasks.common import tracking; from mlflow import MlflowClient; tracking.setup(); c = MlflowClient(); "
        "print([(n, a, c.get_model_version_by_alias(n, a).version) for n, a in "
        "[('tvd','sft'),('tvd','champion'),('reference-generator','sft'),('reference-generator','dpo'),"
        "('reference-generator','champion')]])")], cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "('reference-generator', 'dpo', 2)" in r.stdout and "('tvd', 'champion', 1)" in r.stdout
    r = run_cli(["esvr", "train", "generate", "I failed my exam again.", "--model", "models:/reference-generator@dpo",
                 "--max-new-tokens", "8"], cwd=root)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["model"].endswith("@dpo"), r.stderr[-2000:]
