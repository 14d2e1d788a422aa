"""dvc.yaml is the one stage graph: every stage runs its flow through the CLI and declares the params groups and
the code it depends on, so DVC re-runs it exactly when something it reads changed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from flows import STAGE_FLOWS
from tasks import paths

SPEC = yaml.safe_load((paths.ROOT / "dvc.yaml").read_text())["stages"]
# Plumbing shared by every stage; a change there is not a change of any stage's result.
INFRA = {"__init__", "paths", "io", "hashing", "logs", "tracking", "orchestration", "config"}


def _dep_paths(stage: str) -> set[str]:
    return {d if isinstance(d, str) else next(iter(d)) for d in SPEC[stage].get("deps", [])}


def _tasks_imports(pyfile: Path) -> set[str]:
    """tasks.* modules a file imports (directly)."""
    mods: set[str] = set()
    for node in ast.walk(ast.parse(pyfile.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "tasks":
                mods |= {a.name for a in node.names}
            elif node.module.startswith("tasks."):
                mods.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            mods |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tasks.")}
    return {m for m in mods if (paths.ROOT / "tasks" / f"{m}.py").exists()}


def _code_closure(flow_file: Path) -> set[str]:
    """The flow file plus every non-infra tasks module reachable from it through imports."""
    seen, todo = {flow_file.relative_to(paths.ROOT).as_posix()}, [flow_file]
    while todo:
        for m in _tasks_imports(todo.pop()) - INFRA:
            rel = f"tasks/{m}.py"
            if rel not in seen:
                seen.add(rel)
                todo.append(paths.ROOT / rel)
    return seen


def test_flows_and_stages_match():
    assert set(STAGE_FLOWS) == set(SPEC)


@pytest.mark.parametrize("stage", sorted(SPEC))
def test_stage_runs_its_flow_through_the_cli(stage):
    assert SPEC[stage]["cmd"].startswith(f"esvr stage {stage}")


@pytest.mark.parametrize("stage", sorted(SPEC))
def test_stage_declares_its_code(stage):
    flow_file = paths.ROOT / (STAGE_FLOWS[stage].split(":")[0].replace(".", "/") + ".py")
    missing = _code_closure(flow_file) - _dep_paths(stage)
    assert not missing, f"dvc.yaml stages.{stage}.deps lacks {sorted(missing)}"


@pytest.mark.parametrize("stage", sorted(SPEC))
def test_stage_declares_the_params_groups_its_flow_reads(stage):
    from tasks.config import Params
    from tasks.orchestration import declared_groups

    flow_file = paths.ROOT / (STAGE_FLOWS[stage].split(":")[0].replace(".", "/") + ".py")
    read = (set(re.findall(r"\bcfg\.(\w+)", flow_file.read_text())) & set(Params.model_fields)) - {"profile"}
    missing = read - set(declared_groups(stage))
    assert not missing, f"dvc.yaml stages.{stage}.params lacks {sorted(missing)}"
    assert declared_groups(stage), f"stage {stage} declares no params"
