"""End to end: the DAG reproduces with `dvc repro` in a fresh git+DVC copy of the project, a second `dvc repro`
is a no-op, and `esvr pipeline`'s Prefect flow follows dvc.yaml and leaves tagged MLflow runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.common import config, tracking
from tests.conftest import run_cli

MICRO = Path(__file__).with_name("micro.yaml")


def use_micro_profile(root: Path) -> None:
    """params.yaml of the copy = tiny profile + tests/e2e/micro.yaml (every stage shrunk to seconds)."""
    data, files = config.resolve_profile(root / "profiles" / "tiny.yaml")
    if MICRO.is_file():
        data = config._deep_merge(data, yaml.safe_load(MICRO.read_text()) or {})
    config.validate(data, [*files, MICRO])
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _runs(root: Path):
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri(root / "mlruns"))
    return mlflow.search_runs(search_all_experiments=True, output_format="list")  # esvr and esvr/<family>


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 13 stages, each a fresh process importing torch: ~6 min on 2 idle cores
def test_dvc_repro_then_noop(project_copy, mirror, prefect_api):
    """The whole DAG (micro sizes) through plain `dvc repro`; stage flows report to the test's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    use_micro_profile(project_copy)
    api = {"PREFECT_API_URL": PREFECT_API_URL.value()}
    first = run_cli(["dvc", "repro"], project_copy, env_extra=api, timeout=2300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (project_copy / "dvc.lock").is_file()
    # The no-op is checked by what it does, not by a wall-clock bound (speed lives in benchmarks/): no stage runs,
    # dvc.lock keeps its bytes, no MLflow run is added.
    lock_before, runs_before = (project_copy / "dvc.lock").read_bytes(), len(_runs(project_copy))
    second = run_cli(["dvc", "repro"], project_copy, env_extra=api)
    assert second.returncode == 0, second.stderr
    assert "Data and pipelines are up to date" in second.stdout
    assert "Running stage" not in second.stdout, second.stdout[-2000:]
    assert (project_copy / "dvc.lock").read_bytes() == lock_before
    assert len(_runs(project_copy)) == runs_before

    lock = tracking.read_lock_stages(project_copy)
    # stage runs only: the evaluation's per-variant runs (experiment esvr-eval) carry no stage tag
    runs = {r.data.tags["esvr.stage"]: r for r in _runs(project_copy) if "esvr.stage" in r.data.tags}
    for stage, entry in lock.items():
        run = runs[stage]
        assert run.info.status == "FINISHED"
        assert run.data.tags["dvc.lock_hash"] == tracking.lock_entry_hash(entry), stage
        assert run.data.tags["esvr.profile"] == "tiny"
        assert len(run.data.tags["git.sha"]) >= 40


def test_pipeline_flow_follows_dvc_yaml(project_copy, mirror, prefect_api):
    """The Prefect pipeline flow runs stage `sources` via DVC, then finds it up to date."""
    from prefect.client.orchestration import get_client  # noqa: F401 - the harness API is live

    from flows.pipeline import dvc_stage_order, pipeline_flow

    use_micro_profile(project_copy)
    order = dvc_stage_order(project_copy)
    assert order[0] == "sources"
    first = pipeline_flow(targets=["sources"], root=str(project_copy))
    assert first == {"sources": "ran"}
    again = pipeline_flow(targets=["sources"], root=str(project_copy))
    assert again == {"sources": "up-to-date"}
    (run,) = _runs(project_copy)
    tags = run.data.tags
    assert tags["esvr.stage"] == "sources" and tags["dvc.stage"] == "sources"
    assert tags["prefect.flow_run_id"] not in ("", "none")
    assert (project_copy / "data" / "external" / "goemotions" / "train.tsv").is_file()


def test_bad_params_fail_fast_and_write_nothing(project_copy):
    p = project_copy / "params.yaml"
    p.write_text(p.read_text().replace("experiment: esvr", "experiment: esvr\n  colour: blue"))
    res = run_cli(["esvr", "stage", "sources"], project_copy)
    assert res.returncode != 0
    assert "tracking.colour" in res.stderr and "params.yaml:" in res.stderr
    assert "flow run" not in res.stderr.lower() and "Traceback" not in res.stderr  # refused before any flow started
    assert not (project_copy / "data").exists() and not (project_copy / "mlruns" / "mlflow.db").exists()


def test_cli_help_lists_commands(project_copy):
    res = run_cli(["esvr", "--help"], project_copy)
    assert res.returncode == 0
    for cmd in ("stage", "pipeline", "config", "data"):
        assert cmd in res.stdout


def test_dvc_push_pull_roundtrip(project_copy, mirror, tmp_path):
    """The configured local remote works: push the staged data, delete it, pull it back."""
    res = run_cli(["dvc", "repro", "sources"], project_copy)
    assert res.returncode == 0, res.stderr[-2000:]
    remote = tmp_path / "remote"
    assert run_cli(["dvc", "remote", "modify", "local", "url", str(remote)], project_copy).returncode == 0
    push = run_cli(["dvc", "push", "sources"], project_copy)
    assert push.returncode == 0, push.stderr
    assert any(remote.rglob("*"))
    target = project_copy / "data" / "external" / "esconv" / "train.json"
    digest = target.read_bytes()
    import shutil

    shutil.rmtree(project_copy / "data" / "external")
    pull = run_cli(["dvc", "pull", "sources"], project_copy)
    assert pull.returncode == 0, pull.stderr
    assert target.read_bytes() == digest
