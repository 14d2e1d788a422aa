"""MLflow on sqlite under <project>/mlruns/, and the one helper that opens a run per stage.

Every stage run is tagged with what reproduces it: the git sha, the hash of the stage's dvc.lock entry, the Prefect
flow-run id and the profile. The run is always ended, FAILED when the stage raised.

What a user lands on in the MLflow UI (docs/operations.md): every experiment is tagged
`mlflow.experimentKind=custom_model_development`, so MLflow 3 opens it on the runs table instead of the GenAI
overview; training runs of one model family share an experiment (`esvr/value-detector`, `esvr/reference-generator`,
...), so comparing two value detectors or two supporters is: open the family, tick two runs, Compare. Data stages
stay in the base experiment (`tracking.experiment`, `esvr`). Every run also carries `esvr.family`.
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


#: MLflow 3 opens an experiment of this kind on its runs table (not the GenAI overview with "Traces 0").
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

#: Stage -> model family: one experiment per family (its registered model's name); other stages are data stages.
FAMILIES = {
    "train_value_detector": "value-detector",
    "train_emotion": "emotion-model",
    "train_tvd": "tvd",
    "train_rg_sft": "reference-generator",
    "train_rg_dpo": "reference-generator",
    "train_supporter_sft": "supporter",
    "train_supporter_dpo": "supporter",
    "train_supporter_emotion_dpo": "supporter",  # the Emotion-DPO baseline: compared with ES-VR in one experiment
}
DATA_FAMILY = "data"

#: MLflow 3.17's UI picks GenAI vs model-training views from a global toggle (URL `workflowType`, else the browser's
#: last choice, GenAI by default) before the experiment's kind tag: the links we print carry the runs-table view.
UI_VIEW = "workflowType=machine_learning"


def ui_url(server: str, experiment_id: str) -> str:
    """Link that opens an experiment on its runs table (see UI_VIEW)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}?{UI_VIEW}"


def experiment_links(server: str, base: str = "esvr", root: Path | None = None) -> dict[str, str]:
    """{experiment name: runs-table link} for the base experiment and every `base/<family>` one in the store."""
    import mlflow

    server_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    mlflow.set_tracking_uri(server_uri if server_uri.startswith(("http://", "https://")) else
                            tracking_uri(root or Path(os.environ.get("ESVR_MLRUNS", paths.MLRUNS))))
    exps = mlflow.search_experiments(filter_string=f"name LIKE '{base}%'")
    return {e.name: ui_url(server, e.experiment_id) for e in sorted(exps, key=lambda e: e.name)
            if e.name == base or e.name.startswith(base + "/")}


def family_of(stage: str) -> str:
    return FAMILIES.get(stage, DATA_FAMILY)


def experiment_for(stage: str, base: str = "esvr") -> str:
    """`base/<family>` for a training stage, `base` for data stages."""
    fam = family_of(stage)
    return base if fam == DATA_FAMILY else f"{base}/{fam}"


def store_root(root: Path | None = None) -> Path:
    """The project's MLflow store folder (`ESVR_MLRUNS` overrides, e.g. in tests), created if absent."""
    root = (root or Path(os.environ.get("ESVR_MLRUNS", paths.MLRUNS))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _server() -> str | None:
    """The tracking server's URL when the environment names one (compose): it owns the store and artifacts."""
    server = os.environ.get("MLFLOW_TRACKING_URI", "")
    return server if server.startswith(("http://", "https://")) else None


def connect(root: Path | None = None) -> str:
    """Point MLflow at the project's store (or the tracking server the environment names); return the URI."""
    import mlflow

    uri = _server() or tracking_uri(store_root(root))
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(experiment: str, root: Path | None = None) -> str:
    """The id of `experiment` in the current store, created on first use (artifacts pinned to the project store,
    the runs-table kind tag, see the module doc) without making it the active experiment."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    # sqlite's default artifact root is ./mlruns relative to the cwd: pin it to the project store instead.
    artifacts = None if _server() else (store_root(root) / "artifacts").as_uri()
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(experiment, artifact_location=artifacts)
    if exp is None or exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        mlflow.MlflowClient().set_experiment_tag(exp_id, *EXPERIMENT_KIND)
    return str(exp_id)


def setup(experiment: str = "esvr", root: Path | None = None) -> str:
    """Point MLflow (and the HF Trainer callback, via env) at the project store; return the experiment id (created
    with the runs-table kind tag, see the module doc)."""
    import mlflow

    uri = connect(root)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment
    exp_id = ensure_experiment(experiment, root)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


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


def read_lock_stages(root: Path | None = None) -> dict[str, Any]:
    """The `stages` of dvc.lock read as DVC writes it (YAML 1.2, ruamel): PyYAML's YAML 1.1 would turn an unquoted
    `no` (e.g. TRL's `eval_strategy: no`) into False and every hash of that entry would differ from DVC's."""
    from ruamel.yaml import YAML

    p = (root or paths.ROOT) / "dvc.lock"
    if not p.is_file():
        return {}
    return dict((YAML(typ="safe", pure=True).load(p.read_text(encoding="utf-8")) or {}).get("stages", {}))


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


#: Set by flows/pipeline.py for its stage processes, so it can tag their runs with the final dvc.lock hash.
PIPELINE_RUN_ENV = "ESVR_PIPELINE_RUN"


def lock_file_hash(root: Path | None = None) -> str:
    """sha256 (16 hex) of dvc.lock: names the whole reproduced state of a pipeline run."""
    p = (root or paths.ROOT) / "dvc.lock"
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else "none"


def tag_pipeline_runs(pipeline_run: str, tags: dict[str, str], root: Path | None = None) -> int:
    """Set `tags` on every run (any experiment) that a pipeline run started; returns how many."""
    import mlflow

    server = os.environ.get("MLFLOW_TRACKING_URI", "")
    mlflow.set_tracking_uri(server if server.startswith(("http://", "https://")) else
                            tracking_uri((root / "mlruns") if root else Path(os.environ.get("ESVR_MLRUNS", paths.MLRUNS))))
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`esvr.pipeline_run` = '{pipeline_run}'")
    for r in runs:
        for k, v in tags.items():
            client.set_tag(r.info.run_id, k, v)
    return len(runs)


def _flow_run_id() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "none")
    except Exception:  # noqa: BLE001
        return "none"


@contextlib.contextmanager
def stage_run(stage: str, profile: str, experiment: str = "esvr", params: dict[str, Any] | None = None) -> Iterator[Any]:
    """Open an MLflow run for one stage (in its family's experiment); tag it; end it FINISHED or FAILED whatever
    happens."""
    import mlflow

    setup(experiment_for(stage, experiment))
    tags = {
        "esvr.stage": stage,
        "esvr.family": family_of(stage),
        "esvr.pipeline_run": os.environ.get(PIPELINE_RUN_ENV, "none"),  # the scheduled pipeline run that ran it
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
