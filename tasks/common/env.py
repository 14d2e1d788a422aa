"""Process-wide defaults that must be set *before* prefect, mlflow, dvc or transformers are imported.

Only entry points call `apply_defaults()` (the `esvr` CLI, stage flows run by it, the test and benchmark harnesses);
importing a library module never changes the environment. Every value is a `setdefault`, so a user's environment
always wins.

Offline mode (no model/dataset hub) follows, in order: `ESVR_OFFLINE` (1/0), the active params file's `offline` key,
else on. The tiny profile is offline (every model is local or built from a config); the paper profile is not, so
`esvr config use paper && dvc repro` downloads Llama-3 on a worker with hub access.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tasks.common import paths

log = logging.getLogger(__name__)

OFFLINE_ENV = "ESVR_OFFLINE"
HF_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def _always() -> dict[str, str]:
    root = paths.ROOT
    return {
        # Prefect: local ephemeral API, state inside the project, quiet, and patient on a loaded 2-core CI box.
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(root / ".prefect" / "results"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "TOKENIZERS_PARALLELISM": "false",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def _flag(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{OFFLINE_ENV}={value!r}: expected 1/0 (or true/false)")


def offline_setting(params_file: Path | None = None) -> bool:
    """Whether this process runs without the hub: `ESVR_OFFLINE`, else params' `offline` key, else True.

    Reads only the one key of the raw YAML (following `extends:`), so the CLI decides in microseconds and a
    broken params file is reported later by `config check`, not here."""
    if OFFLINE_ENV in os.environ:
        return _flag(os.environ[OFFLINE_ENV])
    import yaml

    p = Path(params_file) if params_file else paths.PARAMS_FILE
    for _ in range(8):  # bounded `extends:` chain
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return True
        if not isinstance(data, dict):
            return True
        if "offline" in data:
            return bool(data["offline"])
        parent = data.get("extends")
        if not parent:
            return True
        p = paths.PROFILES_DIR / f"{parent}.yaml"
    return True


def apply_defaults(offline: bool | None = None, params_file: Path | None = None) -> dict[str, str]:
    """Set the defaults (never overriding the user's environment); returns what was set."""
    values = _always()
    if offline is None:
        offline = offline_setting(params_file)
    if offline:
        values.update({k: "1" for k in HF_OFFLINE_VARS})
        # transformers' CLI writes a marker file under HF_HOME: keep it inside the project when nothing downloads.
        values["HF_HOME"] = str(paths.ROOT / ".cache" / "huggingface")
    done = {}
    for k, v in values.items():
        if k not in os.environ:
            os.environ[k] = v
            done[k] = v
    return done
