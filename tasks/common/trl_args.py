"""TRL's own configuration classes as the schema of every training group (nothing re-declared here).

`train.trainer` holds TrainingArguments fields shared by every SFT and DPO run; `train.<stage>.args` holds
`trl.SFTConfig` / `trl.DPOConfig` fields of one run. Two checks, both against TRL itself:

* at params load (`esvr config check`, every stage start), in milliseconds: every key must be a field of the class.
  The field names are read from TRL's and transformers' source with `ast` — importing trl takes seconds, and an
  unknown key must fail before any work;
* `validate_types()` checks every value against the field's annotation (pydantic, no construction, so a GPU-only
  setting such as `bf16: true` can be checked on a CPU machine); `build()` constructs the real config class (TRL's
  own cross-field checks) when a stage trains.

esvr sets some fields itself; they are refused in params so that each is declared once: `output_dir` (the stage's
checkpoint folder), `seed`/`data_seed` (params `seed`) and `report_to` (the stage's MLflow run).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path
from typing import Any, Literal

Kind = Literal["sft", "dpo"]
RESERVED = frozenset({"output_dir", "seed", "data_seed", "report_to"})
_CLASSES: dict[str, tuple[str, str, str]] = {  # kind -> (package, module file, class)
    "sft": ("trl", "trainer/sft_config.py", "SFTConfig"),
    "dpo": ("trl", "trainer/dpo_config.py", "DPOConfig"),
    "base": ("transformers", "training_args.py", "TrainingArguments"),
}


def _source(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)  # a top-level spec: does not import the package
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / rel


def _dataclass_fields(path: Path, cls: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                    and not s.target.id.startswith("_")}
    raise ImportError(f"{path}: no class {cls}; is the installed TRL/transformers the pinned version?")


@functools.cache
def field_names(kind: Kind | Literal["base"]) -> frozenset[str]:
    """Fields of trl.SFTConfig / trl.DPOConfig (both extend transformers.TrainingArguments) or of the base."""
    package, rel, cls = _CLASSES["base"]
    names = _dataclass_fields(_source(package, rel), cls)
    if kind != "base":
        package, rel, cls = _CLASSES[kind]
        names |= _dataclass_fields(_source(package, rel), cls)
    return frozenset(names)


def unknown_keys(args: dict[str, Any], kind: Kind | Literal["shared"]) -> dict[str, str]:
    """key -> why it is refused, for keys that are not fields of the TRL class (or that esvr sets itself)."""
    allowed = field_names("sft") & field_names("dpo") if kind == "shared" else field_names(kind)
    cls = {"shared": "both trl.SFTConfig and trl.DPOConfig", "sft": "trl.SFTConfig", "dpo": "trl.DPOConfig"}[kind]
    out = {}
    for k in args:
        if k in RESERVED:
            out[k] = "set by esvr itself (checkpoint folder, params seed, the stage's MLflow run); remove it"
        elif k not in allowed:
            out[k] = f"not a field of {cls} (TRL {_version('trl')}); see its documentation for the options"
    return out


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _config_class(kind: Kind) -> Any:
    if kind == "sft":
        from trl import SFTConfig

        return SFTConfig
    from trl import DPOConfig

    return DPOConfig


def validate_types(args: dict[str, Any], kind: Kind) -> dict[str, str]:
    """key -> error for values that do not match TRL's annotation of the field (imports trl: seconds)."""
    import typing

    from pydantic import TypeAdapter, ValidationError

    hints = typing.get_type_hints(_config_class(kind))
    errors = {}
    for k, v in args.items():
        if k not in hints:
            continue
        try:
            TypeAdapter(hints[k]).validate_python(v)
        except ValidationError as e:
            errors[k] = e.errors()[0]["msg"]
        except Exception:  # noqa: BLE001 - an annotation pydantic cannot build a validator for: TRL checks it in build()
            continue
    return errors


def build(kind: Kind, *layers: dict[str, Any], **esvr_set: Any) -> Any:
    """The real SFTConfig/DPOConfig from params layers (later wins) plus the fields esvr sets itself."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return _config_class(kind)(**merged, **esvr_set)
