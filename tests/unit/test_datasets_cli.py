"""`esvr datasets check|stats|build`: exit codes and messages on hand-built data."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from tasks import datasets as ds
from tasks.cli.main import app
from tests.dataset_builders import write_rule, write_store
from tests.params import datasets_cfg


@pytest.fixture
def built(tmp_path, monkeypatch):
    threads_dir, ann_dir = write_store(tmp_path / "data", n_threads=6)
    out = tmp_path / "data" / "datasets"
    monkeypatch.setattr(ds, "THREADS_DIR", threads_dir)
    monkeypatch.setattr(ds, "ANNOTATED_DIR", ann_dir)
    monkeypatch.setattr(ds, "OUT_DIR", out)
    ds.run(datasets_cfg(value_detector=str(write_rule(tmp_path / "vd"))), 0, threads_dir, ann_dir, out)
    return out


def test_check_passes_then_fails_on_a_leaked_thread(built):
    runner = CliRunner()
    ok = runner.invoke(app, ["datasets", "check"])
    assert ok.exit_code == 0 and "OK" in ok.output
    train = built / "tvd" / "train.jsonl"
    first = train.read_bytes().splitlines()[0]
    rec = orjson.loads(first)
    rec["id"] = "copied"
    with open(built / "tvd" / "test.jsonl", "ab") as f:
        f.write(orjson.dumps(rec) + b"\n")
    bad = runner.invoke(app, ["datasets", "check"])
    assert bad.exit_code == 1 and "is in both" in bad.output


def test_stats_and_missing_output(built, monkeypatch, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["datasets", "stats"])
    assert res.exit_code == 0 and orjson.loads(res.output)["tvd"]["total"] > 0
    monkeypatch.setattr(ds, "OUT_DIR", tmp_path / "nowhere")
    assert runner.invoke(app, ["datasets", "check"]).exit_code == 2
