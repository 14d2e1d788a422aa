"""Where the project lives and where every stage reads and writes, relative to the project root.

Stage input/output folders are declared once, in dvc.yaml; `stage_paths` reads them from there (and a test holds
the constants below against it), so code never hard-wires a path DVC does not know.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The project root: the folder that holds params.yaml and dvc.yaml (`ESVR_ROOT` overrides, e.g. in a worker).
ROOT = Path(os.environ.get("ESVR_ROOT", Path(__file__).resolve().parents[2])).resolve()
PARAMS_FILE = ROOT / "params.yaml"
PROFILES_DIR = ROOT / "profiles"
DATA = ROOT / "data"
EXTERNAL = DATA / "external"
METRICS = ROOT / "metrics"
MODELS = ROOT / "models"
MLRUNS = ROOT / "mlruns"
CHECKPOINTS = ROOT / "checkpoints"

# Stage outputs: the folders dvc.yaml names under `outs:` (tests/unit/test_paths.py holds the two together, so a
# renamed output fails there instead of in a stage that reads the old folder).
LIVE = DATA / "live"  # crawl_live (persisted between runs: the watermark of the live crawl)
THREADS = DATA / "threads"  # crawl
ANNOTATED = DATA / "annotated"  # annotate
DATASETS = DATA / "datasets"  # datasets
PERSONAS = DATA / "personas"  # personas
SIMULATED = DATA / "simulated"  # simulate
EVALUATION = DATA / "evaluation"  # evaluate
REPORT = DATA / "report"  # report
VALUE_DETECTOR = MODELS / "value_detector"  # train_value_detector
EMOTION = MODELS / "emotion"  # train_emotion
TOKENIZER = MODELS / "tokenizer"  # base_model
BASE = MODELS / "base"  # base_model
TVD = MODELS / "tvd"  # train_tvd
RG_SFT = MODELS / "rg_sft"  # train_rg_sft
RG_DPO = MODELS / "rg_dpo"  # train_rg_dpo
SUPPORTER_SFT = MODELS / "supporter_sft"  # train_supporter_sft
ROLLOUTS = DATA / "rollouts"  # rollouts
PAIRS = DATA / "pairs"  # mine_pairs
SUPPORTER_DPO = MODELS / "supporter_dpo"  # train_supporter_dpo
SUPPORTER_EMOTION_DPO = MODELS / "supporter_emotion_dpo"  # train_supporter_emotion_dpo

#: The one setting that names the public-data mirror. Unset, the sibling `../shared/data` is used
#: (the layout of CI and of the project machines).
MIRROR_ENV = "ESVR_MIRROR"


def mirror_dir() -> Path:
    """The public-data mirror folder (may not exist: callers report how to fix that)."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser().resolve() if value else (ROOT.parent / "shared" / "data").resolve()


def portable_text(text: str) -> str:
    """`text` with this checkout's root left out of every path in it, for messages that are written into tracked
    files (metrics, skip reasons): the same run on another machine or clone writes the same bytes."""
    return text.replace(str(ROOT) + os.sep, "")
