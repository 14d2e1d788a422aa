"""Where every stage reads and writes, relative to the project root (the same paths dvc.yaml names)."""

from __future__ import annotations

import os
from pathlib import Path

from tasks import PROJECT_ROOT

ROOT = PROJECT_ROOT
PARAMS_FILE = ROOT / "params.yaml"
PROFILES_DIR = ROOT / "profiles"
DATA = ROOT / "data"
EXTERNAL = DATA / "external"
METRICS = ROOT / "metrics"
MODELS = ROOT / "models"
MLRUNS = ROOT / "mlruns"

#: The one setting that names the public-data mirror. Unset, the sibling `../shared/data` is used
#: (the layout of CI and of the project machines).
MIRROR_ENV = "ESVR_MIRROR"


def mirror_dir() -> Path:
    """The public-data mirror folder (may not exist: callers report how to fix that)."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser().resolve() if value else (ROOT.parent / "shared" / "data").resolve()
