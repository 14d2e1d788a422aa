"""Training params: both profiles validate, the paper profile is the 8B LoRA recipe, micro.yaml stays valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from tasks.common.config import _deep_merge, load_profile, resolve_profile, validate

MICRO = Path(__file__).resolve().parents[1] / "e2e" / "micro.yaml"


def test_paper_profile_is_llama3_8b_lora_bf16_with_checkpointing():
    p = load_profile("paper")
    assert p.base_model.source == "hub" and p.base_model.name == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert p.base_model.dtype == "bfloat16" and p.base_model.chat_template == "llama3"
    t = p.train.trainer
    assert t["bf16"] and t["activation_checkpointing"] and not t["use_cpu"]
    assert p.train.lora.r > 0 and p.train.lora.target_modules


def test_tiny_profile_trains_on_cpu_without_bf16():
    t = load_profile("tiny").train.trainer
    assert t["use_cpu"] and not t["bf16"] and not t["activation_checkpointing"]  # ENV-NOTES §4.1-2


def test_micro_overrides_validate():
    data, files = resolve_profile("tiny")
    merged = _deep_merge(data, yaml.safe_load(MICRO.read_text()))
    p = validate(merged, [*files, MICRO])
    assert p.train.tvd.args["max_steps"] <= 5 and p.base_model.tiny.pretrain_steps <= 5
