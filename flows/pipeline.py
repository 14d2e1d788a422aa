"""The whole DAG as one Prefect flow that follows dvc.yaml: DVC orders the stages and decides which are stale.

The flow keeps no copy of the graph: it asks DVC for the stages in dependency order and runs
`dvc repro --single-item STAGE` for each, so an up-to-date stage costs one DVC check. This is what a Prefect
deployment schedules (see flows/deploy.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, task

from tasks import paths

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


@task(name="dvc-repro", retries=0)  # never retry a training blindly; DVC resumes from what is already done
def repro_stage(name: str, force: bool = False) -> str:
    cmd = [_dvc(), "repro", "--single-item", name] + (["--force"] if force else [])
    log.info("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=paths.ROOT, env=os.environ.copy(), text=True, capture_output=True)
    sys.stderr.write(proc.stdout[-4000:])
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-8000:])
        raise RuntimeError(f"stage {name} failed (dvc repro exit {proc.returncode}); see the output above")
    return "up-to-date" if "didn't change, skipping" in proc.stdout or "is cached" in proc.stdout else "ran"


@flow(name="pipeline")
def pipeline_flow(targets: list[str] | None = None, force: bool = False) -> dict[str, str]:
    order = dvc_stage_order(targets=targets)
    log.info("stages in order: %s", order)
    results: dict[str, str] = {}
    for name in order:
        results[name] = repro_stage(name, force=force)
        log.info("%s: %s", name, results[name])
    return results
