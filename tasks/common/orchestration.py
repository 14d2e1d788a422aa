"""Prefect conventions, declared once.

* Item/shard tasks cache across runs: the key covers the task's inputs (paths, content hashes, config dicts —
  never clients or DataFrames) and its source, plus an explicit `cache_version` input that a stage bumps when its
  logic changes in a way the source hash would not show (e.g. a helper module). Results persist under
  $PREFECT_RESULTS_LOCAL_STORAGE_PATH (inside the project, git-ignored).
* Whole-stage tasks do not cache: DVC decides whether a stage runs at all.
* Stage flows take the params file path, load it themselves and see only the groups dvc.yaml declares.
* Shard-parallel work (annotate's shards, the dump reader's files, rollouts, evaluation) goes through
  `map_shards(task, kwargs_list, runner)`: the `orchestration` params pick Prefect's thread pool, a Dask cluster
  (prefect-dask) or a Ray cluster (prefect-ray). The runner never changes an output, only where the work runs, so
  `orchestration` is no stage's DVC param.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import yaml

from tasks.common import paths
from tasks.common.config import GroupView, OrchestrationParams, Params, load_params


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


def stage_params(stage: str, params_file: str | Path | None = None) -> Params:
    """Validated params, restricted to what the stage declared in dvc.yaml. Typed as `Params` so mypy checks every
    access; at run time a GroupView refuses groups the stage did not declare."""
    return cast(Params, GroupView(load_params(params_file), declared_params(stage), stage))


def quiet_heartbeats() -> Any:
    """Context manager that turns Prefect's 1 s flow heartbeat off (used by tests and the pipeline flow)."""
    import prefect.settings as ps

    return ps.temporary_settings(updates={ps.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


# ------------------------------------------------------------------------------------------------ task runners
def runner_params(params_file: str | Path | None = None) -> OrchestrationParams:
    """The `orchestration` group of a params file (read whole: it is no stage's declared group, see module doc)."""
    return load_params(params_file).orchestration


def make_task_runner(o: OrchestrationParams | None) -> Any:
    """A Prefect task runner for `o` (None: a thread pool of 2). Dask and Ray are imported only when chosen."""
    if o is None or o.task_runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=o.workers if o else 2)
    if o.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as e:  # pragma: no cover - prefect-dask is a project dependency
            raise RuntimeError("orchestration.task_runner: dask needs prefect-dask (pip install -e .)") from e
        if o.address:
            return DaskTaskRunner(address=o.address)
        # processes, one thread each: torch work in a worker does not fight the others for the GIL or for cores
        return DaskTaskRunner(cluster_kwargs={"n_workers": o.workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as e:
        raise RuntimeError("orchestration.task_runner: ray needs the `ray` extra (pip install -e '.[ray]')") from e
    if o.address:
        return RayTaskRunner(address=o.address)
    return RayTaskRunner(init_kwargs={"num_cpus": o.workers, "include_dashboard": False})


def map_shards(task: Any, calls: list[dict[str, Any]], runner: OrchestrationParams | None = None) -> list[Any]:
    """Submit `task(**kwargs)` for every element of `calls` on the configured runner; return the final states in
    the order of `calls` (a failed shard's state raises on `.result()`, so nothing is dropped silently)."""
    if not calls:
        return []
    with make_task_runner(runner) as tr:
        futures = [tr.submit(task, parameters=kw) for kw in calls]
        for f in futures:
            f.wait()
        return [f.state for f in futures]
