"""The three datasets are what TRL consumes directly: SFT (assistant-only loss) on tvd / rg_sft and conversational
DPO on rg_pairs, extra columns included, with a tokenizer + ChatML template like the one tasks/base_model.py saves."""

from __future__ import annotations

import copy

import pytest

from tasks import datasets as ds
from tests.dataset_builders import save_tiny_tokenizer, write_rule, write_store
from tests.params import datasets_cfg


@pytest.mark.slow  # ~30-40 s on 2 shared cores: three real TRL trainers
def test_trl_trains_one_step_on_each_dataset(tmp_path):
    import torch
    from datasets import load_dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    torch.set_num_threads(2)
    tok_dir = save_tiny_tokenizer(tmp_path / "tok")
    threads_dir, ann_dir = write_store(tmp_path, n_threads=6)
    out = tmp_path / "datasets"
    ds.run(datasets_cfg(max_length=512, value_detector=str(write_rule(tmp_path / "vd", 0.3))), 0, threads_dir,
           ann_dir, out)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.chat_template = (tok_dir / "chat_template.jinja").read_text()

    def model():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))

    common = dict(max_steps=1, per_device_train_batch_size=2, learning_rate=1e-2, save_strategy="no", report_to="none",
                  use_cpu=True, bf16=False, max_length=512, dataloader_pin_memory=False)
    for name in ("tvd", "rg_sft"):
        data = load_dataset("json", data_files=str(out / name / "train.jsonl"), split="train")
        m = model()
        before = m.lm_head.weight.detach().clone()
        tr = SFTTrainer(model=m, args=SFTConfig(output_dir=str(tmp_path / name), assistant_only_loss=True, **common),
                        train_dataset=data, processing_class=tok)
        loss = tr.train().training_loss
        assert loss == loss and loss > 0, f"{name}: loss {loss}"
        assert not torch.equal(before, m.lm_head.weight), f"{name}: weights did not change"
    pairs = load_dataset("json", data_files=str(out / "rg_pairs" / "train.jsonl"), split="train")
    policy = model()
    dpo = DPOTrainer(model=policy, ref_model=copy.deepcopy(policy), train_dataset=pairs, processing_class=tok,
                     args=DPOConfig(output_dir=str(tmp_path / "dpo"), beta=0.1, **common))
    loss = dpo.train().training_loss
    assert abs(loss - 0.6931) < 0.05  # first DPO step from policy == reference: log(2)
