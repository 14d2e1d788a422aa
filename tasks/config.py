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


class LLMRoleParams(StrictModel):
    """One LLM role: an OpenAI-compatible endpoint, a model and its sampling; the key is named, never stored."""

    base_url: str  # "local": the server the stage starts itself (llm.local_models); else e.g. https://api.openai.com/v1
    model: str  # with base_url "local": a key of llm.local_models; else the endpoint's model name
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(256, gt=0)
    api_key_env: str | None = None  # NAME of the env var holding the key (e.g. OPENAI_API_KEY); null: no key
    price_prompt_per_mtok: float = Field(0.0, ge=0.0)  # USD per 1M prompt tokens (ledger + budget)
    price_completion_per_mtok: float = Field(0.0, ge=0.0)  # USD per 1M completion tokens


LLM_ROLES = ("persona_writer", "seeker", "supporter_teacher", "judge", "tvd", "rg")


class LLMParams(StrictModel):
    """`llm`: every role's endpoint plus the shared client policy (concurrency, retries, cache, budget)."""

    roles: dict[str, LLMRoleParams]
    local_models: dict[str, str] = {}  # name -> model dir, served by the stage on 127.0.0.1 (random port)
    serve_startup_timeout_s: float = Field(180.0, gt=0)
    max_concurrency: int = Field(8, ge=1)  # requests in flight across all roles
    timeout_s: float = Field(60.0, gt=0)  # per HTTP attempt
    max_retries: int = Field(5, ge=0)  # the openai client's own retries (429/5xx/timeouts)
    max_reasks: int = Field(3, ge=0)  # re-asks of answers that fail their schema
    budget_usd: float = Field(5.0, ge=0.0)  # stop cleanly once the run has spent this much
    cache_dir: str = ".cache/llm"  # response cache (outside DVC outs, so a re-run or resume pays nothing)
    max_string_chars: int | None = Field(None, gt=0)  # caps schema strings (tiny random models must stop)

    @field_validator("roles")
    @classmethod
    def _all_roles(cls, v: dict[str, LLMRoleParams]) -> dict[str, LLMRoleParams]:
        missing = [r for r in LLM_ROLES if r not in v]
        unknown = [r for r in v if r not in LLM_ROLES]
        if missing or unknown:
            raise ValueError(f"llm.roles must define exactly {list(LLM_ROLES)}; missing {missing}, unknown {unknown}")
        return v


class PersonasParams(StrictModel):
    """`personas`: seeker personas written by the persona_writer from ESConv situations and ESC-Eval role cards."""

    count: int = Field(gt=0)  # personas kept after de-duplication (paper: 2036)
    oversample: float = Field(1.3, ge=1.0)  # seeds drawn per wanted persona (near-duplicates get dropped)
    esconv_fraction: float = Field(0.7, ge=0.0, le=1.0)  # share of seeds from ESConv situations (rest: role cards)
    dedup_threshold: float = Field(0.92, gt=0.0, le=1.0)  # MiniLM cosine at or above which a persona is a duplicate
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # personas held out for evaluation (never simulated)
    max_failed_fraction: float = Field(0.2, ge=0.0, le=1.0)  # seeds whose writer call fails, before the stage fails


class SimulateParams(StrictModel):
    """`simulate`: seeker x supporter-teacher dialogues over the train personas."""

    personas: int | None = Field(None, gt=0)  # simulate this many train personas (null: all)
    min_turns: int = Field(2, ge=1)  # supporter turns before the seeker may end the conversation
    max_turns: int = Field(8, ge=1)  # supporter turns at most
    validation_fraction: float = Field(0.15, ge=0.0, lt=1.0)  # dialogues (by persona) in the validation split
    max_failed_fraction: float = Field(0.2, ge=0.0, le=1.0)  # dialogues lost to LLM errors, before the stage fails


# --------------------------------------------------------------------------------------------------- root
class Params(StrictModel):
    """The whole params.yaml: one group per stage."""

    profile: Literal["tiny", "paper"]
    seed: int = 1234
    tracking: TrackingParams
    sources: SourcesParams
    llm: LLMParams
    personas: PersonasParams
    simulate: SimulateParams


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
