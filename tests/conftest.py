"""Shared fixtures: a real Prefect API (prefect_test_harness), a temporary MLflow sqlite store, the public-data
mirror (skip with a reason when absent) and a temporary git + DVC copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks.common import env, paths

env.apply_defaults(offline=True)  # before prefect/mlflow/transformers are imported

ROOT = paths.ROOT
BIN = Path(sys.executable).parent
#: Set by `tracking.setup` for the HF Trainer callback: a value left by one in-process test would point the next
#: test (and every subprocess it starts) at that test's temporary store.
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(autouse=True)
def _restore_mlflow_env():
    before = {k: os.environ.get(k) for k in _MLFLOW_ENV}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real, temporary Prefect API for the whole session (one server, heartbeats off)."""
    from prefect.testing.utilities import prefect_test_harness

    from tasks.common.orchestration import quiet_heartbeats

    with prefect_test_harness(server_startup_timeout=90), quiet_heartbeats():
        yield


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A fresh MLflow sqlite store for one test; returns its folder (stage helpers honour ESVR_MLRUNS)."""
    root = tmp_path / "mlruns"
    monkeypatch.setenv("ESVR_MLRUNS", str(root))
    import mlflow

    from tasks.common import tracking

    tracking.setup("esvr-test", root)
    yield root
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The public-data mirror; tests that need it skip (with the fix) where it is absent."""
    m = paths.mirror_dir()
    if not m.is_dir():
        pytest.skip(f"public-data mirror not found at {m}: set {paths.MIRROR_ENV} to the mirror folder")
    return m


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A temporary git + DVC repo holding the project's tracked files (what a clean clone has)."""
    dst = tmp_path / "esvr"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / f.decode()
        if src.is_file():
            (dst / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f.decode())
    _git(dst, "init", "-q")
    _git(dst, "-c", "user.email=t@esvr.invalid", "-c", "user.name=t", "add", "-A")
    _git(dst, "-c", "user.email=t@esvr.invalid", "-c", "user.name=t", "commit", "-qm", "copy")
    return dst


def run_cli(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None, timeout: int = 900):
    """Run a project command (esvr, dvc) in `cwd` with the venv on PATH and that folder as the project root."""
    env = os.environ.copy()
    # PREFECT_HOME stays the project's (already migrated: saves ~7 s per process); results go to the copy.
    env.update({"PATH": f"{BIN}:{env['PATH']}", "ESVR_ROOT": str(cwd), "PYTHONPATH": str(cwd),
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(cwd / ".prefect/results")})
    env.setdefault(paths.MIRROR_ENV, str(paths.mirror_dir()))
    env.pop("ESVR_MLRUNS", None)
    env.pop("PREFECT_API_URL", None)
    if not env.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")):
        for k in _MLFLOW_ENV:  # the copy's own store, not one an in-process test pointed at
            env.pop(k, None)
    env.update(env_extra or {})
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------------- small annotators
#: The recipe of the session's small detectors: a linear probe on frozen MiniLM sentence embeddings (every layer
#: frozen, so classifier.train_classifier embeds each text once and trains the head on the cache), on subsets of the
#: real data: about a minute for both on 2 free cores. Small, not good: the stages measure quality.
SMALL_VALUE_DETECTOR = {"limit_train": 2000, "limit_dev": 600, "max_length": 64, "epochs": 12, "max_steps": 0,
                        "batch_size": 32, "freeze_layers": 6, "lr_encoder": 1.0e-4, "lr_head": 5.0e-3,
                        "warmup_ratio": 0.05, "threshold_mode": "global", "num_threads": 2, "log_every": 200}
SMALL_VALUE_FREE = {"value_free_train": 800, "value_free_report": 200, "esconv_turns": 200}
SMALL_EMOTION = {"limit_train": 3000, "limit_dev": 800, "max_length": 32, "epochs": 10, "max_steps": 0,
                 "batch_size": 32, "freeze_layers": 6, "lr_encoder": 1.0e-4, "lr_head": 5.0e-3, "num_threads": 2,
                 "log_every": 500}


def mirror_external(mirror: Path, dst: Path) -> Path:
    """A data/external/ folder of links into the mirror, named as the sources stage names them (tasks/sources.yaml)."""
    from tasks.sources import load_manifest

    dst.mkdir(parents=True, exist_ok=True)
    for name, entry in load_manifest().items():
        if (mirror / entry["mirror"]).is_dir() and not (dst / name).exists():
            (dst / name).symlink_to(mirror / entry["mirror"], target_is_directory=True)
    return dst


@pytest.fixture(scope="session")
def small_annotators(tmp_path_factory, mirror) -> dict[str, Path]:
    """A value detector (with its presence rule, calibrated as the stage does) and an emotion model, trained here
    once per session on subsets of the mirror, so the behaviour tests run on real trained models in a clean clone.
    Returns {"value_detector": folder, "emotion": folder, "summary": ...}."""
    import dataclasses

    from tasks.annotators import stage
    from tasks.annotators.train_value_detector import presence_extension
    from tasks.common.config import load_profile

    root = tmp_path_factory.mktemp("small-annotators")
    tiny = load_profile("tiny")
    vcfg = tiny.value_detector.model_copy(update={
        **SMALL_VALUE_DETECTOR, "presence": tiny.value_detector.presence.model_copy(update=SMALL_VALUE_FREE)})
    ecfg = tiny.emotion.model_copy(update=SMALL_EMOTION)
    out: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "EXTERNAL", mirror_external(mirror, root / "external"))
        # the figures on FULCRA/ESConv are the stage's business; the tests probe the model themselves
        ext = dataclasses.replace(presence_extension(vcfg), report=lambda model, th, seed: {})
        _, out["value_summary"] = stage.run_train("value_detector", vcfg, tiny.seed, root / "value_detector", ext=ext)
        _, out["emotion_summary"] = stage.run_train("emotion", ecfg, tiny.seed, root / "emotion")
    out.update(value_detector=root / "value_detector", emotion=root / "emotion", external=root / "external")
    return out


@pytest.fixture(scope="session")
def mirror_store(tmp_path_factory, small_annotators) -> dict[str, Path]:
    """data/threads + data/annotated built here: the mirror's r/offmychest table through the crawl code (10 threads,
    as the e2e micro profile), annotated by the session's small annotators through the annotate code."""
    from tasks import annotate
    from tasks.common.config import load_profile
    from tasks.crawl import crawl, records

    p = load_profile("tiny")
    table = small_annotators["external"] / "offmychest_threads" / "offmychest.csv"
    root = tmp_path_factory.mktemp("mirror-store")
    threads_dir, ann_dir = root / "threads", root / "annotated"
    crawl.run(p.crawl.model_copy(update={"max_threads": 10}), [table], [], threads_dir,
              records.pseudonymiser_from_env(True, p.seed))
    m = annotate.load_models(str(small_annotators["value_detector"]), str(small_annotators["emotion"]))
    for shard in sorted((threads_dir / "shards").glob("*.jsonl")):
        annotate.run_shard(shard, ann_dir / "shards" / shard.name, m, p.annotate)
    return {"threads": threads_dir, "annotated": ann_dir, "value_detector": small_annotators["value_detector"]}
