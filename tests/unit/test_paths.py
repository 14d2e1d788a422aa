"""Stage output folders are declared once: dvc.yaml's `outs:` and the constants of tasks/common/paths.py agree."""

from __future__ import annotations

from pathlib import Path

from tasks.common import paths
from tasks.common.orchestration import dvc_stages


def _outs() -> set[str]:
    out = set()
    for spec in dvc_stages().values():
        for o in spec.get("outs", []):
            out.add(o if isinstance(o, str) else next(iter(o)))
    return out


def _constants() -> dict[str, str]:
    roots = (paths.DATA, paths.MODELS)
    return {name: value.relative_to(paths.ROOT).as_posix() for name, value in vars(paths).items()
            if name.isupper() and isinstance(value, Path) and value not in roots
            and any(value.is_relative_to(r) for r in roots)}


def test_every_stage_output_has_one_constant():
    consts = set(_constants().values())
    missing = sorted(_outs() - consts)
    assert not missing, f"dvc.yaml outs without a constant in tasks/common/paths.py: {missing}"


def test_every_constant_is_a_stage_output():
    stray = {k: v for k, v in _constants().items() if v not in _outs()}
    assert not stray, f"paths constants that no dvc.yaml stage outputs (rename them together): {stray}"


def test_portable_text_leaves_out_only_this_checkout_root():
    inside = f"{paths.ROOT / 'data' / 'pairs' / 'value'}/train.jsonl has no pairs; store sqlite:///{paths.MLRUNS}/x.db"
    assert paths.portable_text(inside) == "data/pairs/value/train.jsonl has no pairs; store sqlite:///mlruns/x.db"
    assert paths.portable_text("/elsewhere/data/x.jsonl") == "/elsewhere/data/x.jsonl"
