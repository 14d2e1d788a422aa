"""Params groups for tests: the tiny profile's values (the schema declares no defaults), with overrides."""

from __future__ import annotations

from functools import cache
from typing import Any

from tasks.common.config import Params, load_profile


@cache
def tiny() -> Params:
    return load_profile("tiny")


def group(dotted: str, **overrides: Any) -> Any:
    """The tiny profile's group at `dotted` (e.g. "train.tvd"), re-validated with `overrides` applied on top."""
    obj: Any = tiny()
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return type(obj).model_validate({**obj.model_dump(), **overrides})


#: The datasets settings the datasets unit tests were written for (a fixed cut instead of the detector's thresholds,
#: no top-k, whole turns, 512 tokens): hand-computed expectations stay valid whatever the tiny profile chooses.
DATASETS_TEST = {"value_threshold": 0.25, "value_top_k": 0, "max_turn_chars": 0, "max_length": 512,
                 "chars_per_token": 4.0, "positivity_quantile": None}


def datasets_cfg(**overrides: Any) -> Any:
    return group("datasets", **{**DATASETS_TEST, **overrides})
