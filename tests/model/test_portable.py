"""A DPO adapter trained on the merged SFT model, composed with the SFT adapter, equals the merged DPO model when
applied to the base (what vLLM serves), and registered adapters name their base portably."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.train import portable


def _tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))


def _lora(model, seed: int, r: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    return get_peft_model(model, cfg)


def test_composed_adapter_on_the_base_equals_the_merged_dpo_model(tmp_path):
    from peft import PeftModel

    base = _tiny()
    base.save_pretrained(tmp_path / "base")
    sft = _lora(_tiny(), 1, 4)
    sft.save_pretrained(tmp_path / "sft_adapter")
    sft_merged = sft.merge_and_unload()
    sft_merged.save_pretrained(tmp_path / "sft")
    dpo = _lora(sft_merged, 2, 8)
    dpo.save_pretrained(tmp_path / "dpo_adapter")
    dpo_merged = dpo.merge_and_unload()

    info = portable.compose(tmp_path / "sft_adapter", tmp_path / "dpo_adapter", tmp_path / "composed")
    assert info == {"rank": 12, "modules": 6}
    served = PeftModel.from_pretrained(_tiny().from_pretrained(tmp_path / "base"), tmp_path / "composed").merge_and_unload()
    x = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        want, got = dpo_merged(x).logits, served(x).logits
        bare = _tiny().from_pretrained(tmp_path / "base")(x).logits
        only_dpo = PeftModel.from_pretrained(_tiny().from_pretrained(tmp_path / "base"),
                                             tmp_path / "dpo_adapter").merge_and_unload()(x).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # the bug it fixes: the DPO adapter alone on the base drops the SFT weights
    assert not torch.allclose(only_dpo, want, atol=1e-3) and not torch.allclose(bare, want, atol=1e-3)
    cfg = json.loads((tmp_path / "composed" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (12, 12)


def test_finalize_names_the_base_portably(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "models" / "tvd" / "adapter").mkdir(parents=True)
    (root / "models" / "tvd" / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": str(root / "models" / "base"), "r": 4, "target_modules": ["v_proj", "q_proj"]}))
    portable.finalize(root / "models" / "tvd", str(root / "models" / "base"), root=root)
    cfg = json.loads((root / "models" / "tvd" / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "models/base" and cfg["target_modules"] == ["q_proj", "v_proj"]
    assert portable.portable_name("meta-llama/Meta-Llama-3-8B-Instruct", root) == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert portable.portable_name("/elsewhere/base", root) == "/elsewhere/base"


def test_compose_refuses_non_uniform_ranks(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8,
                                                                      "rank_pattern": {"q_proj": 2}}))
    with pytest.raises(ValueError, match="uniform-rank"):
        portable.compose(tmp_path / "a", tmp_path / "b", tmp_path / "c")
