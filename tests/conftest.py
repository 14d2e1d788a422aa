"""Shared fixtures: a real Prefect API (prefect_test_harness), a temporary MLflow sqlite store, the public-data
mirror (skip with a reason when absent) and a temporary git + DVC copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.common import env, paths

env.apply_defaults(offline=True)  # before prefect/mlflow/transformers are imported

ROOT = paths.ROOT
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real, temporary Prefect API for the whole session (one server, heartbeats off)."""
    from prefect.testing.utilities import prefect_test_harness

    from tasks.common.orchestration import quiet_heartbeats

    with prefect_test_harness(server_startup_timeout=90), quiet_heartbeats():
        yield


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A fresh MLflow sqlite store for one test; returns its folder (stage helpers honour ESVR_MLRUNS)."""
    root = tmp_path / "mlruns"
    monkeypatch.setenv("ESVR_MLRUNS", str(root))
    import mlflow

    from tasks.common import tracking

    tracking.setup("esvr-test", root)
    yield root
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The public-data mirror; tests that need it skip (with the fix) where it is absent."""
    m = paths.mirror_dir()
    if not m.is_dir():
        pytest.skip(f"public-data mirror not found at {m}: set {paths.MIRROR_ENV} to the mirror folder")
    return m


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A temporary git + DVC repo holding the project's tracked files (what a clean clone has)."""
    dst = tmp_path / "esvr"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / f.decode()
        if src.is_file():
            (dst / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f.decode())
    _git(dst, "init", "-q")
    _git(dst, "-c", "user.email=t@esvr.invalid", "-c", "user.name=t", "add", "-A")
    _git(dst, "-c", "user.email=t@esvr.invalid", "-c", "user.name=t", "commit", "-qm", "copy")
    return dst


def run_cli(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None, timeout: int = 900):
    """Run a project command (esvr, dvc) in `cwd` with the venv on PATH and that folder as the project root."""
    env = os.environ.copy()
    # PREFECT_HOME stays the project's (already migrated: saves ~7 s per process); results go to the copy.
    env.update({"PATH": f"{BIN}:{env['PATH']}", "ESVR_ROOT": str(cwd), "PYTHONPATH": str(cwd),
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(cwd / ".prefect/results")})
    env.setdefault(paths.MIRROR_ENV, str(paths.mirror_dir()))
    env.pop("ESVR_MLRUNS", None)
    env.pop("PREFECT_API_URL", None)
    env.update(env_extra or {})
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
