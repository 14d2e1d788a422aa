"""The house layout: no import cycles (lazy imports count too), every module imports on its own in a fresh
interpreter without touching the process environment, and nothing that only tests use ships in the package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tasks.common import paths
from tests.imports import all_modules, cycles, imports_of


def test_no_import_cycles():
    found = cycles()
    assert not found, "import cycles (move the shared part into its own module): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_cycle_finder_can_fail(monkeypatch):
    """The finder sees a cycle when one exists (guards the test above against a graph that is always empty)."""
    import tests.imports as imp

    fake = {"tasks.a": frozenset({"tasks.b"}), "tasks.b": frozenset({"tasks.a"}), "tasks.c": frozenset()}
    monkeypatch.setattr(imp, "all_modules", lambda: sorted(fake))
    monkeypatch.setattr(imp, "imports_of", lambda m: fake[m])
    assert imp.cycles() == [["tasks.a", "tasks.b"]]
    assert imports_of("tasks.crawl.crawl") >= {"tasks.crawl.records", "tasks.crawl.pushshift"}


_PROBE = r"""
import importlib, json, os, sys
before = dict(os.environ)
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        failed[name] = f"{type(e).__name__}: {e}"
after = dict(os.environ)
changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
print(json.dumps({"failed": failed, "changed": changed}))
"""


def _fresh_import(modules: list[str]) -> dict:
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("PREFECT_", "HF_", "TRANSFORMERS_", "MLFLOW_", "TOKENIZERS_", "DVC_"))}
    out = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=paths.ROOT, env=env, capture_output=True,
                         text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    """One interpreter per module, so a module that only works after another one was imported fails here."""
    for name in all_modules():
        res = _fresh_import([name])
        assert not res["failed"], res["failed"]


def test_importing_the_package_changes_no_environment():
    """`import tasks.…` / `flows.…` sets no variable (offline flags, Prefect home, logging are entry-point work)."""
    res = _fresh_import([m for m in all_modules() if not m.startswith("flows.")])
    assert not res["failed"], res["failed"]
    assert res["changed"] == [], f"importing the package changed the environment: {res['changed']}"


def test_fakes_live_under_tests():
    shipped = {m for m in all_modules()}
    assert not [m for m in shipped if "mock" in m or "fake" in m], "test fakes belong under tests/fakes/"
    assert not (paths.ROOT / "tasks" / "mock_llm.py").exists()


def test_offline_follows_the_profile(monkeypatch, tmp_path):
    from tasks.common import env

    monkeypatch.delenv(env.OFFLINE_ENV, raising=False)
    assert env.offline_setting(paths.PROFILES_DIR / "tiny.yaml") is True
    assert env.offline_setting(paths.PROFILES_DIR / "paper.yaml") is False
    monkeypatch.setenv(env.OFFLINE_ENV, "1")
    assert env.offline_setting(paths.PROFILES_DIR / "paper.yaml") is True
    for k in env.HF_OFFLINE_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(env.OFFLINE_ENV, "0")
    set_now = env.apply_defaults()
    assert not set(env.HF_OFFLINE_VARS) & set(set_now)
