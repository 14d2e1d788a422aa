"""Stage `base_model`: the tokenizer, the chat template and the base causal LM every training stage starts from.

* tiny profile: a byte-level BPE tokenizer trained on the crawled thread corpus, a ChatML-style template, and a small
  Llama built from a config (no hub), optionally pre-trained for a few hundred steps on the same corpus so that the
  LoRA stages start from a language model rather than from noise.
* paper profile: the hub model named in params (Llama-3-8B-Instruct by default); its tokenizer is saved with our
  Llama-3 template (the same turns as Meta's, plus `{% generation %}` markers that TRL's assistant-only loss needs),
  and `models/base/BASE.json` points at the hub name instead of copying 16 GB into the DVC cache.

`models/tokenizer/chat_template.jinja` is the explicit artifact: `load_tokenizer()` refuses a folder without it, so
training, inference and the simulator all format turns identically.

Pure core: `train_tokenizer`, `build_tiny_llama`; I/O: `iter_thread_texts`, `run`, `resolve_base`. The templates and
`load_tokenizer` live in tasks/domain/chat_template.py. The Prefect flow is flows/base_model.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tasks.common import paths
from tasks.common.config import BaseModelParams, TinyArchParams, TrainRunParams
from tasks.common.io import read_json, read_jsonl, write_json
from tasks.domain.chat_template import SPECIAL_TOKENS, TemplateError, save_tokenizer, template
from tasks.train import trainers

log = logging.getLogger(__name__)

BASE_POINTER = "BASE.json"


class BaseModelError(TemplateError):
    """Missing corpus, tokenizer or template; the message says which stage to run."""


# --------------------------------------------------------------------------------------------------- pure core
def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int, template: str) -> Any:
    """Byte-level BPE trained on `texts` (no unknown bytes), wrapped as a HF fast tokenizer with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.chat_template = template
    return tok


def build_tiny_llama(tok: Any, arch: TinyArchParams, seed: int) -> Any:
    """A small LlamaForCausalLM sized by params (`base_model.tiny`), initialised deterministically from `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads, max_position_embeddings=arch.max_position_embeddings,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


# --------------------------------------------------------------------------------------------------- I/O
def iter_thread_texts(shards_dir: Path, max_texts: int, max_chars: int) -> Iterator[str]:
    """Utterance texts of the crawled threads (docs/CONTRACTS.md crawl → data/threads/), in shard-name order."""
    shards = sorted(Path(shards_dir).glob("*.jsonl"))
    if not shards:
        raise BaseModelError(f"{shards_dir}: no thread shards (*.jsonl); run `dvc repro crawl` first")
    n = 0
    for shard in shards:
        for thread in read_jsonl(shard):
            for u in thread.get("utterances", []):
                text = (u.get("text") or "").strip()
                if not text:
                    continue
                yield text[:max_chars]
                n += 1
                if max_texts and n >= max_texts:
                    return


def resolve_base(base_dir: str | Path) -> str:
    """The path or hub id to load the base model from: models/base/ itself, or the hub name its BASE.json names."""
    base_dir = Path(base_dir)
    pointer = base_dir / BASE_POINTER
    if pointer.is_file():
        return str(read_json(pointer)["name"])
    if not (base_dir / "config.json").is_file():
        raise BaseModelError(f"{base_dir}: no model (config.json or {BASE_POINTER}); run `dvc repro base_model`")
    return str(base_dir)


def run(cfg: BaseModelParams, seed: int, trainer_args: dict[str, Any], train_run: TrainRunParams,
        shards_dir: Path | None = None, tok_dir: Path | None = None,
        base_dir: Path | None = None, ckpt_dir: Path | None = None) -> dict[str, Any]:
    """Build (tiny) or point at (hub) the base model and save the tokenizer + template; returns metrics."""
    shards_dir = shards_dir or paths.THREADS / "shards"
    tok_dir = tok_dir or paths.TOKENIZER
    base_dir = base_dir or paths.BASE
    template_text = template(cfg.chat_template)
    report: dict[str, Any] = {}
    if cfg.source == "hub":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.name)
        tok.chat_template = template_text
        save_tokenizer(tok, tok_dir)
        base_dir.mkdir(parents=True, exist_ok=True)
        write_json(base_dir / BASE_POINTER, {"name": cfg.name, "dtype": cfg.dtype})
        return {"vocab_size": len(tok), "hub": 1}

    texts = list(iter_thread_texts(shards_dir, cfg.tokenizer.max_texts, cfg.tokenizer.max_chars))
    log.info("training a %d-token BPE on %d texts from %s", cfg.tokenizer.vocab_size, len(texts), shards_dir)
    tok = train_tokenizer(texts, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency, template_text)
    tok.model_max_length = cfg.tiny.max_position_embeddings
    save_tokenizer(tok, tok_dir)
    model = build_tiny_llama(tok, cfg.tiny, seed)
    report.update(vocab_size=len(tok), corpus_texts=len(texts), n_params=sum(p.numel() for p in model.parameters()))
    if cfg.tiny.pretrain_steps > 0:


        res = trainers.pretrain(texts, model, tok, cfg.tiny, trainer_args, train_run, seed, base_dir,
                                ckpt_dir or paths.CHECKPOINTS / "base_model")
        report.update(pretrain_loss=res.train_loss, pretrain_steps=res.global_step, pretrain_seconds=res.seconds)
    else:
        model.save_pretrained(str(base_dir))
    save_tokenizer(tok, base_dir)  # the base folder is a complete HF model folder on its own
    return report
