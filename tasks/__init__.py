"""esvr stage modules: each holds a pure core, a `run()` that does the I/O, and thin Prefect task wrappers.

Importing this package sets the process-wide defaults that must exist *before* prefect, mlflow, dvc or
transformers are imported (they read these variables at import time). Every value is a `setdefault`, so a
user's environment always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The project root: the folder that holds params.yaml and dvc.yaml.
PROJECT_ROOT = Path(os.environ.get("ESVR_ROOT", Path(__file__).resolve().parent.parent)).resolve()

_DEFAULTS = {
    # Prefect: local ephemeral API, state inside the project, quiet, and patient on a loaded 2-core CI box.
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),
    "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(PROJECT_ROOT / ".prefect" / "results"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # No model/dataset hub at run time: every model is local or built from a config.
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": str(PROJECT_ROOT / ".cache" / "huggingface"),
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
for _k, _v in _DEFAULTS.items():
    os.environ.setdefault(_k, _v)
