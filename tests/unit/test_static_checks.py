"""Static checks are part of the test suite: ruff (style, imports, bugbear) and mypy (with the pydantic plugin)
over the code that ships, so CI fails on a type error as it does on a failing test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cmd", [["ruff", "check", "tasks", "flows", "tests", "benchmarks"],
                                 ["mypy", "tasks", "flows"]], ids=["ruff", "mypy"])
def test_static_check_is_clean(cmd):
    r = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}{r.stderr[-2000:]}"
