"""Prefect conventions, declared once.

* Item/shard tasks cache across runs: the key covers the task's inputs (paths, content hashes, config dicts —
  never clients or DataFrames) and its source, plus an explicit `cache_version` input that a stage bumps when its
  logic changes in a way the source hash would not show (e.g. a helper module). Results persist under
  $PREFECT_RESULTS_LOCAL_STORAGE_PATH (inside the project, git-ignored).
* Whole-stage tasks do not cache: DVC decides whether a stage runs at all.
* Stage flows take the params file path, load it themselves and see only the groups dvc.yaml declares.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tasks.common import paths
from tasks.common.config import GroupView, load_params


def result_storage() -> Path:
    """Where cached shard results persist (the entry point's PREFECT_RESULTS_LOCAL_STORAGE_PATH, else the project's);
    Prefect creates the folder when it first writes a result."""
    return Path(os.environ.get("PREFECT_RESULTS_LOCAL_STORAGE_PATH", paths.ROOT / ".prefect" / "results")).resolve()


def shard_task(**kwargs: Any):
    """`@task` for per-item/shard work: cached across runs on inputs + task source, results persisted."""
    from prefect import task
    from prefect.cache_policies import INPUTS, TASK_SOURCE

    opts: dict[str, Any] = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, result_storage=result_storage())
    opts.update(kwargs)
    return task(**opts)


def dvc_stages(dvc_yaml: Path | None = None) -> dict[str, Any]:
    """The `stages:` mapping of dvc.yaml (the one declaration of the graph, its commands, deps, params and outs)."""
    dvc_yaml = dvc_yaml or paths.ROOT / "dvc.yaml"
    return dict(yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"])


def stage_names(dvc_yaml: Path | None = None) -> list[str]:
    """Stage names in dvc.yaml's order."""
    return list(dvc_stages(dvc_yaml))


def declared_params(stage: str, dvc_yaml: Path | None = None) -> list[str]:
    """The params keys `stage` lists under `params:` in dvc.yaml (top-level groups or dotted sub-groups)."""
    spec = dvc_stages(dvc_yaml)
    if stage not in spec:
        raise KeyError(f"dvc.yaml: no stage {stage!r}; stages: {sorted(spec)}")
    keys: list[str] = []
    for item in spec[stage].get("params", []):
        keys += [item] if isinstance(item, str) else [k for v in item.values() for k in v]
    return keys


def declared_groups(stage: str, dvc_yaml: Path | None = None) -> list[str]:
    """The params groups `stage` lists under `params:` in dvc.yaml (a dotted key counts for its group)."""
    return sorted({k.split(".")[0] for k in declared_params(stage, dvc_yaml)})


def stage_params(stage: str, params_file: str | Path | None = None) -> GroupView:
    """Validated params, restricted to what the stage declared in dvc.yaml."""
    return GroupView(load_params(params_file), declared_params(stage), stage)


def quiet_heartbeats() -> Any:
    """Context manager that turns Prefect's 1 s flow heartbeat off (used by tests and the pipeline flow)."""
    import prefect.settings as ps

    return ps.temporary_settings(updates={ps.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
