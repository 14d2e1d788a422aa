"""MLflow on sqlite under <project>/mlruns/, and the one helper that opens a run per stage.

Every stage run is tagged with what reproduces it: the git sha, the hash of the stage's dvc.lock entry, the Prefect
flow-run id and the profile. The run is always ended, FAILED when the stage raised.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.common import paths
from tasks.common.hashing import canonical_json

log = logging.getLogger(__name__)


def tracking_uri(root: Path | None = None) -> str:
    """sqlite URI with an absolute path (4 slashes), so `mlflow ui` started anywhere finds the same store."""
    root = (root or paths.MLRUNS).resolve()
    return f"sqlite:///{root}/mlflow.db"


def setup(experiment: str = "esvr", root: Path | None = None) -> str:
    """Point MLflow (and the HF Trainer callback, via env) at the project store; return the experiment id."""
    import mlflow

    root = store_root(root)
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment
    exp_id = ensure_experiment(experiment, root)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def store_root(root: Path | None = None) -> Path:
    """The project's MLflow store folder (`ESVR_MLRUNS` overrides, e.g. in tests), created if absent."""
    root = (root or Path(os.environ.get("ESVR_MLRUNS", paths.MLRUNS))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def ensure_experiment(experiment: str, root: Path | None = None) -> str:
    """The id of `experiment` in the current tracking store, created on first use without making it active."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        return str(exp.experiment_id)
    # sqlite's default artifact root is ./mlruns relative to the cwd: pin it to the project store instead.
    return str(mlflow.create_experiment(experiment, artifact_location=(store_root(root) / "artifacts").as_uri()))


def git_sha(root: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root or paths.ROOT, capture_output=True, text=True, check=True, timeout=10
        )
        sha = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root or paths.ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lock_entry_hash(entry: dict[str, Any]) -> str:
    """Hash of one stage's dvc.lock entry (cmd, deps, params, outs): equal entries mean an identical reproduction."""
    return hashlib.sha256(canonical_json(entry)).hexdigest()[:16]


def current_lock_entry(stage: str, root: Path | None = None) -> dict[str, Any] | None:
    """The dvc.lock entry DVC will write for `stage`, computed now (after the stage produced its outputs)."""
    try:
        from dvc.repo import Repo
        from dvc.stage.serialize import to_single_stage_lockfile

        with Repo(str(root or paths.ROOT)) as repo:
            (st,) = repo.stage.collect(stage)
            st.save(allow_missing=True)
            return to_single_stage_lockfile(st)
    except Exception as e:  # noqa: BLE001 - tagging must never fail the stage; the warning says why
        log.warning("could not compute the dvc.lock entry of %s: %s", stage, e)
        return None


def _flow_run_id() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "none")
    except Exception:  # noqa: BLE001
        return "none"


@contextlib.contextmanager
def stage_run(stage: str, profile: str, experiment: str = "esvr", params: dict[str, Any] | None = None) -> Iterator[Any]:
    """Open an MLflow run for one stage; tag it; end it FINISHED or FAILED whatever happens."""
    import mlflow

    setup(experiment)
    tags = {
        "esvr.stage": stage,
        "esvr.profile": profile,
        "git.sha": git_sha(),
        "prefect.flow_run_id": _flow_run_id(),
        "dvc.stage": os.environ.get("DVC_STAGE", "none"),  # set by DVC when `dvc repro` runs the stage
    }
    run = mlflow.start_run(run_name=stage, tags=tags)
    status = "FAILED"
    try:
        if params:
            mlflow.log_params(flatten(params))
        yield run
        status = "FINISHED"
    finally:
        try:
            if status == "FINISHED" and os.environ.get("DVC_STAGE"):
                entry = current_lock_entry(stage)
                mlflow.set_tag("dvc.lock_hash", lock_entry_hash(entry) if entry else "unavailable")
        finally:
            mlflow.end_run(status=status)


def flatten(obj: Any, prefix: str = "", max_len: int = 500) -> dict[str, str]:
    """Nested params (dicts, pydantic groups) -> dotted keys with string values, as MLflow params. Values are cut at
    `max_len` characters so a run keeps a bounded set of short params."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump()
    if not isinstance(obj, dict):
        s = str(obj)
        return {prefix: s if len(s) <= max_len else s[: max_len - 3] + "..."}
    out: dict[str, str] = {}
    for k, v in obj.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k), max_len))
    return out


def numeric_leaves(obj: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested report as dotted keys (MLflow metric names; other characters become `_`)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(k))
            out.update(numeric_leaves(v, f"{prefix}.{key}" if prefix else key))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out
