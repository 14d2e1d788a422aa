"""The model registry, declared once: resolve a model URI to a local folder, register a folder, read aliases.

A model is named by a URI everywhere (params, CLI options, the LLM layer):

* a folder, absolute or relative to the project root (`models/rg_dpo`): what DVC tracks;
* `models:/NAME@ALIAS` or `models:/NAME/VERSION`: a registered MLflow model version (downloaded once per process);
* `runs:/RUN_ID/PATH` or `mlflow-artifacts:/...`: a logged artifact folder.

Every stage that registers a model logs its folder into the stage's MLflow run and adds a version with aliases
(`champion` is what consumers load). `fingerprint()` names what a URI resolves to *now* (registry version or folder
hash), so caches keyed on it change when a model is retrained.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from tasks.common import paths
from tasks.common.hashing import sha256_tree

log = logging.getLogger(__name__)

REGISTRY_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class RegistryError(FileNotFoundError):
    """A model URI that resolves to nothing usable; the message says which stage trains it."""


def is_registry_uri(uri: str | Path) -> bool:
    return str(uri).startswith(REGISTRY_SCHEMES)


def _use_project_store() -> None:
    """Point MLflow at the project's store unless the environment already names one (ESVR_MLRUNS in tests)."""
    import mlflow

    from tasks.common import tracking

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(tracking.tracking_uri(Path(os.environ.get("ESVR_MLRUNS", paths.MLRUNS))))


@functools.lru_cache(maxsize=64)
def _download(uri: str, tracking_uri: str) -> str:
    import mlflow

    return mlflow.artifacts.download_artifacts(artifact_uri=uri)


def resolve(uri: str | Path, must_contain: tuple[str, ...] = ()) -> Path:
    """A local folder for `uri` (see the module docstring). `must_contain`: any of these files must be in it; for a
    registry download the shallowest sub-folder holding one is returned (models logged under a sub-folder)."""
    s = str(uri)
    if is_registry_uri(s):
        import mlflow

        _use_project_store()
        try:
            p = Path(_download(s, mlflow.get_tracking_uri()))
        except Exception as e:  # noqa: BLE001 - MlflowException and friends: say which URI and how to make it
            raise RegistryError(f"{s}: not in the MLflow registry at {mlflow.get_tracking_uri()} ({e}); "
                                "run the stage that registers it (`dvc repro`)") from e
        if must_contain and not any((p / f).exists() for f in must_contain):
            found = sorted((f for name in must_contain for f in p.rglob(name)), key=lambda f: len(f.parts))
            if found:
                p = found[0].parent
    else:
        p = Path(s).expanduser()
        if not p.is_absolute():
            p = paths.ROOT / p
        p = p.resolve()
    if not p.is_dir():
        raise RegistryError(f"{s}: no model folder at {p}; train it (`dvc repro`) or pass a registry URI such as "
                            "models:/NAME@champion")
    if must_contain and not any((p / f).exists() for f in must_contain):
        raise RegistryError(f"{p}: none of {list(must_contain)} there; is this the right model folder?")
    return p


def register_logged(artifact_uri: str, name: str, run_id: str, aliases: list[str], description: str = "") -> str:
    """Add a version of `name` whose source is an already logged artifact folder; point `aliases` at it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:  # RESOURCE_DOES_NOT_EXIST: the first registration of this name
        client.create_registered_model(name, description=description or None)
    mv = client.create_model_version(name, source=artifact_uri, run_id=run_id)
    for a in aliases:
        client.set_registered_model_alias(name, a, mv.version)
    log.info("registered %s version %s with aliases %s", name, mv.version, aliases)
    return str(mv.version)


def register(model_dir: Path, name: str, aliases: list[str], artifact_path: str = "model",
             files: str = "all") -> str:
    """Log `model_dir` into the active MLflow run and register it as a new version of `name` with `aliases`.

    files="adapter": weights ending in .safetensors at the folder's top level stay in DVC (16 GB merged 8B models);
    the registry keeps the adapter, tokenizer, template and config."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RegistryError("register() needs an active MLflow run (call it inside tracking.stage_run)")
    src = Path(model_dir)
    if files == "adapter":
        for f in src.iterdir():
            if f.is_file() and not f.name.endswith(".safetensors"):
                mlflow.log_artifact(str(f), artifact_path)
        if (src / "adapter").is_dir():
            mlflow.log_artifacts(str(src / "adapter"), f"{artifact_path}/adapter")
    else:
        mlflow.log_artifacts(str(src), artifact_path)
    return register_logged(f"{run.info.artifact_uri}/{artifact_path}", name, run.info.run_id, aliases)


def set_alias(name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)


def alias_version(name: str, alias: str) -> str:
    """The version `alias` points at (raises RegistryError when it points nowhere)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _use_project_store()
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        raise RegistryError(f"models:/{name}@{alias}: no such alias ({e})") from e


def fingerprint(uri: str | Path) -> str:
    """What `uri` resolves to now: `NAME/VERSION` for a registry alias, else the content hash of the folder."""
    s = str(uri)
    if s.startswith("models:/") and "@" in s:
        name, _, alias = s.removeprefix("models:/").partition("@")
        return f"{name}/{alias_version(name, alias)}"
    if s.startswith("models:/"):
        return s.removeprefix("models:/")
    return sha256_tree(resolve(s))[:16]
