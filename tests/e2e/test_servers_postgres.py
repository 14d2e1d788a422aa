"""The compose file's servers on real parts: Debian's PostgreSQL 15 started by the test, an MLflow tracking server on
it (with an artifact store it serves) that logs and reads back a run and a registered model, and a Prefect server on
it that runs a flow. Same settings as docker-compose.yml (backend URIs, --serve-artifacts, --allowed-hosts)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.llm.client import free_port, wait_healthy

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_db_user(cmd: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root: run them as Debian's `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def _stopping(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, user esvr); yields host:port."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL server binaries not found (.ci/run installs Debian's `postgresql`)")
    base = Path(tempfile.mkdtemp(prefix="esvr-pg-"))
    base.chmod(0o755)  # the postgres user reads its data dir below a root-owned temp folder
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_db_user([str(pg / "initdb"), "-D", str(data), "-U", "esvr", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True, timeout=120)
    log = base / "postgres.log"
    subprocess.run(_as_db_user([str(pg / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
                                "-o", f"-h 127.0.0.1 -p {port} -k {base}"]), check=True, capture_output=True, timeout=90)
    try:
        for db in ("mlflow", "prefect"):
            subprocess.run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "esvr", db], check=True,
                           capture_output=True, timeout=60)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(_as_db_user([str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_mlflow_tracking_server_on_postgres_logs_and_reads_back(postgres, tmp_path):
    pytest.importorskip("psycopg")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"postgresql://esvr@{postgres}/mlflow",
           "--serve-artifacts", "--artifacts-destination", str(tmp_path / "artifacts"),
           "--allowed-hosts", f"mlflow,mlflow:5000,localhost:{port},127.0.0.1:{port}"]
    with _stopping(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "mlflow.log", "wb"))) as p:
        wait_healthy(f"http://127.0.0.1:{port}/health", 180, p)
        code = f"""
import mlflow, pathlib, sys
from mlflow import MlflowClient
mlflow.set_tracking_uri("http://127.0.0.1:{port}")
mlflow.set_experiment("esvr-pg")
(pathlib.Path(r"{tmp_path}") / "model").mkdir(exist_ok=True)
(pathlib.Path(r"{tmp_path}") / "model" / "weights.txt").write_text("w")
with mlflow.start_run(run_name="train_tvd") as run:
    mlflow.log_param("lr", 0.01); mlflow.log_metric("f1", 0.5)
    mlflow.log_artifacts(r"{tmp_path}/model", "model")
c = MlflowClient()
mv = c.create_model_version("tvd", f"{{run.info.artifact_uri}}/model", run.info.run_id) if c.create_registered_model("tvd") else None
c.set_registered_model_alias("tvd", "champion", mv.version)
back = c.get_run(run.info.run_id)
assert back.data.params == {{"lr": "0.01"}} and back.data.metrics == {{"f1": 0.5}}, back.data
assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
got = mlflow.artifacts.download_artifacts("models:/tvd@champion")
assert (pathlib.Path(got) / "weights.txt").read_text() == "w"
print("ok", c.get_model_version_by_alias("tvd", "champion").version)
"""
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:] + (tmp_path / "mlflow.log").read_text()[-2000:]
        assert res.stdout.strip().endswith("ok 1")
    assert list((tmp_path / "artifacts").rglob("weights.txt")), "artifacts land in the server's store"


def test_prefect_server_on_postgres_runs_a_flow(postgres, tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://esvr@{postgres}/prefect"}
    env.pop("PREFECT_API_URL", None)
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _stopping(subprocess.Popen(cmd, env=env, stdout=open(tmp_path / "prefect.log", "wb"), stderr=subprocess.STDOUT)) as p:
        wait_healthy(f"http://127.0.0.1:{port}/api/health", 240, p)
        code = """
import asyncio
from prefect import flow, task
from prefect.client.orchestration import get_client

@task
def double(x): return 2 * x

@flow(name="pg-smoke")
def smoke(n: int = 3): return sum(double.map(range(n)).result())

assert smoke() == 6
async def read():
    async with get_client() as c:
        runs = await c.read_flow_runs()
        return [(r.name, r.state_type.value) for r in runs]
print(asyncio.run(read()))
"""
        run_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
        res = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:] + (tmp_path / "prefect.log").read_text()[-2000:]
        assert "COMPLETED" in res.stdout
    # the runs live in PostgreSQL, not in a sqlite file under PREFECT_HOME
    assert not list((tmp_path / "prefect").rglob("*.db"))
