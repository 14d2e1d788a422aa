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

from tasks import paths
from tasks.config import GroupView, load_params


def result_storage() -> Path:
    p = Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"]).resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def shard_task(**kwargs: Any):
    """`@task` for per-item/shard work: cached across runs on inputs + task source, results persisted."""
    from prefect import task
    from prefect.cache_policies import INPUTS, TASK_SOURCE

    opts: dict[str, Any] = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, result_storage=result_storage())
    opts.update(kwargs)
    return task(**opts)


def declared_groups(stage: str, dvc_yaml: Path | None = None) -> list[str]:
    """The params groups `stage` lists under `params:` in dvc.yaml (a dotted key counts for its group)."""
    dvc_yaml = dvc_yaml or paths.ROOT / "dvc.yaml"
    spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    if stage not in spec:
        raise KeyError(f"{dvc_yaml}: no stage {stage!r}; stages: {sorted(spec)}")
    groups: list[str] = []
    for item in spec[stage].get("params", []):
        keys = [item] if isinstance(item, str) else [k for v in item.values() for k in v]
        groups += [k.split(".")[0] for k in keys]
    return sorted(set(groups))


def stage_params(stage: str, params_file: str | Path | None = None) -> GroupView:
    """Validated params, restricted to what the stage declared in dvc.yaml."""
    return GroupView(load_params(params_file), declared_groups(stage), stage)


def quiet_heartbeats() -> Any:
    """Context manager that turns Prefect's 1 s flow heartbeat off (used by tests and the pipeline flow)."""
    import prefect.settings as ps

    return ps.temporary_settings(updates={ps.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
