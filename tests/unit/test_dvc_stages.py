"""dvc.yaml is the one stage graph: every stage runs its flow through the CLI and declares the params groups and
the code it depends on, so DVC re-runs it exactly when something it reads changed."""

from __future__ import annotations

import re

import pytest
import yaml

from flows import flow_ref
from tasks.common import paths
from tests.imports import closure, module_file

SPEC = yaml.safe_load((paths.ROOT / "dvc.yaml").read_text())["stages"]
# Plumbing shared by every stage; a change there is not a change of any stage's result.
INFRA = frozenset(f"tasks.common.{m}" for m in ("paths", "env", "io", "hashing", "logs", "tracking", "orchestration",
                                                 "config", "registry"))


def _dep_paths(stage: str) -> set[str]:
    return {d if isinstance(d, str) else next(iter(d)) for d in SPEC[stage].get("deps", [])}


def _code_closure(stage: str) -> set[str]:
    """The stage's flow file plus every non-infra project module reachable from it through imports."""
    mods = closure(flow_ref(stage)[0], stop=INFRA) - INFRA
    return {module_file(m).relative_to(paths.ROOT).as_posix() for m in mods}


def test_every_stage_has_a_flow_and_a_core_named_after_it():
    for stage in SPEC:
        module, fn = flow_ref(stage)
        assert module_file(module), f"stage {stage}: no flows/{stage}.py"
        cores = [f for f in (paths.ROOT / "tasks").rglob(f"{stage}.py")] + [
            d for d in (paths.ROOT / "tasks").rglob(stage) if d.is_dir()]
        assert cores, f"stage {stage}: no module or package named {stage} under tasks/"
        src = module_file(module).read_text()
        assert f"def {fn}(" in src, f"flows/{stage}.py has no {fn}()"


@pytest.mark.parametrize("stage", sorted(SPEC))
def test_stage_runs_its_flow_through_the_cli(stage):
    assert SPEC[stage]["cmd"].startswith(f"esvr stage {stage}")


@pytest.mark.parametrize("stage", sorted(SPEC))
def test_stage_declares_its_code(stage):
    missing = _code_closure(stage) - _dep_paths(stage)
    assert not missing, f"dvc.yaml stages.{stage}.deps lacks {sorted(missing)}"


@pytest.mark.parametrize("stage", sorted(SPEC))
def test_stage_declares_the_params_groups_its_flow_reads(stage):
    from tasks.common.config import Params
    from tasks.common.orchestration import declared_groups

    # the shells that load the stage's GroupView (stage_params) are where `cfg.GROUP` is read; cores get typed groups
    texts = [(paths.ROOT / f).read_text() for f in _code_closure(stage)]
    code = "\n".join(t for t in texts if "stage_params(" in t)
    read = (set(re.findall(r"\bcfg\.(\w+)", code)) & set(Params.model_fields)) - {"profile"}
    missing = read - set(declared_groups(stage))
    assert not missing, f"dvc.yaml stages.{stage}.params lacks {sorted(missing)}"
    assert declared_groups(stage), f"stage {stage} declares no params"
