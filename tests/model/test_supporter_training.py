"""The supporter's SFT and DPO on a 2-layer Llama built from a config: it trains and its LoRA weights move, every
row keeps its whole answer through TRL's preparation, and the DPO reference is the SFT supporter (TRL's loaded-
adapter path, which would make it something else, is caught)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tasks.supporter import examples as ex
from tasks.supporter import train_supporter_dpo as dpo
from tasks.supporter.train_supporter_sft import run_supporter_sft
from tests.supporter_data import build_tiny_base, dialogue, micro_params, write_pairs, write_simulated


def _lora_tensors(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    root = tmp_path_factory.mktemp("supporter")
    models = build_tiny_base(root / "models")
    sim, _ = write_simulated(root / "data", n_train=4, n_val=1, n_turns=3)
    cfg = micro_params()
    metrics = run_supporter_sft(cfg, sim, models, root / "ckpt", register_model=False)
    return {"root": root, "models": models, "cfg": cfg, "metrics": metrics}


def test_sft_trains_its_lora_and_reports_adoption(sft):
    m = sft["metrics"]
    assert m["global_step"] == 6 and math.isfinite(m["train_loss"]) and math.isfinite(m["eval_loss"])
    assert m["examples.train"] == 12 and m["examples.validation"] == 3
    assert m["targets.adoption_rate"] == 0.5  # supporter.sft.adoption_rate of the tiny profile, exactly
    assert 0 < m["teacher.adoption_rate"] < 0.5 and m["targets.alternative_share"] > 0
    assert {"student.well_formed_share", "student.adoption_rate", "teacher_eval.adoption_rate"} <= set(m)
    assert m["fit.train.dropped_too_long"] == 0
    lora = _lora_tensors(sft["models"] / "supporter_sft" / "adapter")
    b = [v for k, v in lora.items() if "lora_B" in k]
    assert b and all(float(v.abs().max()) > 0 for v in b), "LoRA B starts at zero: training must have moved it"
    assert (sft["models"] / "supporter_sft" / "chat_template.jinja").is_file()


def test_sft_rows_that_trl_would_cut_are_caught(sft):
    """The check on TRL's prepared dataset fails when a row lost answer tokens (here: rows not fitted)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from tasks.domain import chat_template

    tok = chat_template.load_tokenizer(sft["models"] / "tokenizer")
    rows = ex.sft_rows(ex.sft_examples([dialogue(0)], 0.5, 1), tok, 100_000).rows
    short = 200  # shorter than any row: TRL truncates the answers away (keep_start)
    trainer = SFTTrainer(model=str(sft["models"] / "base"), processing_class=tok,
                         train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]),
                         args=SFTConfig(output_dir=str(sft["root"] / "x"), max_length=short, use_cpu=True, bf16=False,
                                        assistant_only_loss=True, report_to="none", max_steps=1))
    with pytest.raises(ex.ExampleError, match="TRL kept|answer tokens"):
        ex.check_sft_dataset(trainer.train_dataset, rows, short, "test")


@pytest.fixture(scope="module")
def dpo_run(sft):
    pairs = write_pairs(sft["root"] / "data" / "pairs", "value", [dialogue(i) for i in range(5)])
    m = dpo.run_supporter_dpo(sft["cfg"], "value", pairs, sft["models"], sft["root"] / "ckpt", register_model=False)
    return {**sft, "pairs": pairs, "metrics_dpo": m}


def test_dpo_reference_is_the_sft_supporter_and_lora_moves(dpo_run):
    m = dpo_run["metrics_dpo"]
    assert m["reference.is_sft"] == 1 and m["reference.max_abs_diff"] <= dpo.REFERENCE_TOL
    assert m["global_step"] == 4 and math.isfinite(m["train_loss"]) and m["fit.train.dropped_too_long"] == 0
    assert {"dpo.reward_accuracy", "dpo.reward_margin", "sft.pref_accuracy", "dpo.student.adoption_rate",
            "sft.student.adoption_rate"} <= set(m)
    lora = _lora_tensors(dpo_run["models"] / "supporter_dpo" / "adapter")
    assert all(float(v.abs().max()) > 0 for k, v in lora.items() if "lora_B" in k)


def test_a_loaded_adapter_or_another_base_is_not_accepted_as_reference(dpo_run):
    """TRL 1.16 with a PeftModel holding a trained adapter copies it into a 'ref' adapter (reference = that
    adapter); with a fresh peft_config on the raw base, the reference is the base. Neither is the SFT folder."""
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from tasks.domain import chat_template
    from tasks.train import trainers

    models = dpo_run["models"]
    tok = chat_template.load_tokenizer(models / "supporter_sft")
    rows = ex.dpo_rows(list(__import__("tasks.common.io", fromlist=["x"]).read_jsonl(
        dpo_run["pairs"] / "value" / "train.jsonl"))[:4], tok, 1024).rows
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = DPOConfig(output_dir=str(dpo_run["root"] / "y"), use_cpu=True, bf16=False, report_to="none", max_steps=1,
                     max_length=1024)
    base = AutoModelForCausalLM.from_pretrained(str(models / "base"), dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(models / "supporter_sft" / "adapter"), is_trainable=True)
    t1 = DPOTrainer(model=loaded, ref_model=None, args=args, train_dataset=data, processing_class=tok)
    assert "ref" in t1.model.peft_config  # what TRL does with a loaded adapter
    with pytest.raises(dpo.ReferenceError_, match="'ref' adapter"):
        dpo.assert_reference_setup(t1, models / "supporter_sft")
    raw = AutoModelForCausalLM.from_pretrained(str(models / "base"), dtype=torch.float32)
    t2 = DPOTrainer(model=raw, ref_model=None, args=args, train_dataset=data, processing_class=tok,
                    peft_config=trainers.lora_config(dpo_run["cfg"].train.lora))
    with pytest.raises(dpo.ReferenceError_, match="not the SFT supporter"):
        dpo.assert_reference_setup(t2, models / "supporter_sft")
    with pytest.raises(ValueError, match="PeftModel"):  # TRL refuses a loaded adapter plus a peft_config
        DPOTrainer(model=loaded, args=args, train_dataset=data, processing_class=tok,
                   peft_config=trainers.lora_config(dpo_run["cfg"].train.lora))


def test_dpo_pairs_that_trl_would_cut_are_caught(dpo_run):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from tasks.common.io import read_jsonl
    from tasks.domain import chat_template

    tok = chat_template.load_tokenizer(dpo_run["models"] / "supporter_sft")
    pairs = list(read_jsonl(dpo_run["pairs"] / "value" / "train.jsonl"))[:3]
    rows = ex.dpo_rows(pairs, tok, 100_000).rows  # not fitted to the short budget below
    short = 300
    trainer = DPOTrainer(model=str(dpo_run["models"] / "supporter_sft"), processing_class=tok,
                         train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                          for r in rows]),
                         args=DPOConfig(output_dir=str(dpo_run["root"] / "z"), max_length=short, use_cpu=True,
                                        bf16=False, report_to="none", max_steps=1))
    with pytest.raises(ex.ExampleError):
        ex.check_dpo_dataset(trainer.train_dataset, rows, short, "test")


def test_too_few_pairs_fail_and_none_with_min_pairs_zero_skip(sft, tmp_path):
    """`supporter.pairs.min_pairs`: fewer pairs than it fail the stage naming the file; with 0 and no pair the stage
    ends untrained, its folder holds only skipped.json (no weights that could pass for a DPO model)."""
    from tasks.common.io import write_jsonl

    pairs = write_pairs(tmp_path / "pairs", "value", [dialogue(0)])
    n = sum(1 for _ in (pairs / "value" / "train.jsonl").open())
    strict = micro_params({"supporter": {"pairs": {"min_pairs": n + 1}}})
    with pytest.raises(dpo.TrainStageError, match=rf"train.jsonl has {n} pairs < supporter.pairs.min_pairs={n + 1}"):
        dpo.run_supporter_dpo(strict, "value", pairs, sft["models"], tmp_path / "ckpt", register_model=False)
    write_jsonl(pairs / "emotion" / "train.jsonl", [])
    lax = micro_params({"supporter": {"pairs": {"min_pairs": 0}}})
    m = dpo.run_supporter_dpo(lax, "emotion", pairs, sft["models"], tmp_path / "ckpt", register_model=False)
    assert m["skipped"] == 1 and m["pairs.train"] == 0
    out = sft["models"] / dpo.SPEC["emotion"][1]
    assert [p.name for p in out.iterdir()] == ["skipped.json"]
