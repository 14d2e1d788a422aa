"""The whole DAG as one Prefect flow that follows dvc.yaml: DVC orders the stages and decides which are stale.

The flow keeps no copy of the graph: it asks DVC for the stages in dependency order and runs
`dvc repro --single-item STAGE` for each, so an up-to-date stage costs one DVC check. This is what the Prefect
deployment `pipeline/nightly` schedules (prefect.yaml): with `profile` it first makes that profile the active
params.yaml, and with `push` it ends with `dvc push` to the configured remote and tags every MLflow run it started
with the hash of the resulting dvc.lock (`dvc.lock_sha`), so a run in the UI names the exact reproduced state.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from prefect import flow, task

from tasks.common import paths

log = logging.getLogger(__name__)


def dvc_stage_order(root: Path | None = None, targets: list[str] | None = None) -> list[str]:
    """Names of dvc.yaml stages in dependency order (dependencies first), optionally only those `targets` need."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root or paths.ROOT)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        stages = [s for s in graph.nodes if getattr(s, "name", None)]
        if targets:
            keep = set()
            for s in stages:
                if s.name in targets:
                    keep |= {s, *nx.descendants(graph, s)}
            stages = [s for s in stages if s in keep]
        sub = graph.subgraph(stages)
        order = list(reversed(list(nx.lexicographical_topological_sort(sub, key=lambda s: s.name))))
        return [s.name for s in order]


def _dvc() -> str:
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else "dvc"


def _child_env(root: Path, pipeline_run: str | None = None) -> dict[str, str]:
    """Stage processes report to this flow's Prefect API (one server, one place to look) and use `root`."""
    from tasks.common.tracking import PIPELINE_RUN_ENV

    env = os.environ.copy()
    env["ESVR_ROOT"] = str(root)
    if pipeline_run:
        env[PIPELINE_RUN_ENV] = pipeline_run  # the stage's MLflow run is tagged with it (tracking.stage_run)
    env.setdefault(paths.MIRROR_ENV, str(paths.mirror_dir()))  # resolved here, where ../shared is known to sit
    if root != paths.ROOT:  # a copy of the project (tests, worktrees): import its code, not the installed one
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    try:
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        server = SubprocessASGIServer._instances.get(None)
        if not url and server is not None and server.running:
            url = server.api_url
        if url:
            env["PREFECT_API_URL"] = url
    except ImportError:  # pragma: no cover - prefect internals moved; children start their own API
        pass
    return env


@task(name="dvc-repro", retries=0)  # never retry a training blindly; DVC resumes from what is already done
def repro_stage(name: str, force: bool = False, root: str | None = None, pipeline_run: str | None = None) -> str:
    where = Path(root) if root else paths.ROOT
    cmd = [_dvc(), "repro", "--single-item", name] + (["--force"] if force else [])
    log.info("$ %s", " ".join(cmd))
    # Stream the stage's output as it comes (training progress, counts) and keep the tail for the error message.
    tail: deque[str] = deque(maxlen=200)
    with subprocess.Popen(cmd, cwd=where, env=_child_env(where, pipeline_run), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            log.info("[%s] %s", name, line.rstrip())
    out = "".join(tail)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {name} failed (dvc repro exit {proc.returncode}):\n{out[-8000:]}")
    if "is cached" in out:
        return "restored"  # DVC's run-cache had outputs for exactly these deps and params
    return "up-to-date" if "didn't change, skipping" in out else "ran"


@task(name="dvc-push", retries=2, retry_delay_seconds=30)  # a remote (S3) can fail transiently; pushing is idempotent
def push_outputs(root: str | None = None) -> str:
    where = Path(root) if root else paths.ROOT
    res = subprocess.run([_dvc(), "push"], cwd=where, env=_child_env(where), capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"dvc push failed (exit {res.returncode}); check `dvc remote list`:\n{res.stderr[-4000:]}")
    log.info("dvc push: %s", res.stdout.strip().splitlines()[-1:] or "nothing to push")
    return res.stdout.strip()


def _pipeline_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "local")


@flow(name="pipeline")
def pipeline_flow(targets: list[str] | None = None, force: bool = False, root: str | None = None,
                  profile: str | None = None, push: bool = False, refresh: list[str] | None = None) -> dict[str, str]:
    """Reproduce the DAG of the project at `root` (default: this project) stage by stage; see the module doc for
    `profile` and `push`. `refresh`: stages re-run even when DVC finds them up to date — those that ask the outside
    world (the scheduled deployment refreshes `crawl_live`: Reddit changes without any dep changing), so a plain
    `dvc repro` or `make pipeline` still does nothing when nothing changed."""
    from tasks.common import tracking

    where = Path(root) if root else paths.ROOT
    if profile:
        from tasks.common.config import use_profile

        use_profile(profile, where / "params.yaml")
        log.info("params.yaml = profile %s", profile)
    run_id = _pipeline_run_id()
    order = dvc_stage_order(Path(root) if root else None, targets=targets)
    log.info("stages in order: %s", order)
    results: dict[str, str] = {}
    for name in order:
        results[name] = repro_stage(name, force=force or name in (refresh or ()), root=root, pipeline_run=run_id)
        log.info("%s: %s", name, results[name])
    if push:
        push_outputs(root)
        lock = tracking.lock_file_hash(where)
        n = tracking.tag_pipeline_runs(run_id, {"dvc.lock_sha": lock}, root=where if root else None)
        log.info("tagged %d MLflow runs of pipeline run %s with dvc.lock %s", n, run_id, lock)
    return results
