"""Stage `base_model`: the tokenizer, the chat template and the base causal LM every training stage starts from.

* tiny profile: a byte-level BPE tokenizer trained on the crawled thread corpus, a ChatML-style template, and a small
  Llama built from a config (no hub), optionally pre-trained for a few hundred steps on the same corpus so that the
  LoRA stages start from a language model rather than from noise.
* paper profile: the hub model named in params (Llama-3-8B-Instruct by default); its tokenizer is saved with our
  Llama-3 template (the same turns as Meta's, plus `{% generation %}` markers that TRL's assistant-only loss needs),
  and `models/base/BASE.json` points at the hub name instead of copying 16 GB into the DVC cache.

`models/tokenizer/chat_template.jinja` is the explicit artifact: `load_tokenizer()` refuses a folder without it, so
training, inference and the simulator all format turns identically.

Pure core: `train_tokenizer`, `chat_template`, `build_tiny_llama`; I/O: `iter_thread_texts`, `run`, `load_tokenizer`,
`resolve_base`. The Prefect flow is flows/base_model.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tasks import paths
from tasks.io import atomic_open, read_json, read_jsonl, write_json

log = logging.getLogger(__name__)

TEMPLATE_FILE = "chat_template.jinja"
BASE_POINTER = "BASE.json"
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "<|im_start|>", "<|im_end|>"]

# ChatML turns; the assistant content sits inside {% generation %} so TRL can mask everything else from the loss.
CHATML = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Meta's Llama-3-Instruct turn format, with the same generation markers.
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% generation %}{{ m['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3}


class BaseModelError(RuntimeError):
    """Missing corpus, tokenizer or template; the message says which stage to run."""


# --------------------------------------------------------------------------------------------------- pure core
def chat_template(name: str) -> str:
    if name not in TEMPLATES:
        raise BaseModelError(f"base_model.chat_template: unknown template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


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


def build_tiny_llama(tok: Any, arch: Any, seed: int) -> Any:
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


def save_tokenizer(tok: Any, out_dir: Path) -> None:
    """Save the tokenizer and the template as `chat_template.jinja` (the artifact every later stage loads)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    with atomic_open(out_dir / TEMPLATE_FILE) as f:
        f.write(tok.chat_template)


def load_tokenizer(tok_dir: str | Path) -> Any:
    """Tokenizer + the explicit chat template artifact; left padding is set at generation time by the caller."""
    from transformers import AutoTokenizer

    tok_dir = Path(tok_dir)
    tpl = tok_dir / TEMPLATE_FILE
    if not tpl.is_file():
        raise BaseModelError(f"{tpl}: chat template artifact missing; run `dvc repro base_model` (or `esvr stage base_model`)")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.chat_template = tpl.read_text(encoding="utf-8")  # the file wins over whatever the tokenizer config holds
    if tok.pad_token is None:  # Llama-3 ships without one; padding is masked, so reusing eos is safe
        tok.pad_token = tok.eos_token
    return tok


def resolve_base(base_dir: str | Path) -> str:
    """The path or hub id to load the base model from: models/base/ itself, or the hub name its BASE.json names."""
    base_dir = Path(base_dir)
    pointer = base_dir / BASE_POINTER
    if pointer.is_file():
        return str(read_json(pointer)["name"])
    if not (base_dir / "config.json").is_file():
        raise BaseModelError(f"{base_dir}: no model (config.json or {BASE_POINTER}); run `dvc repro base_model`")
    return str(base_dir)


def run(cfg: Any, seed: int, trainer_cfg: Any, shards_dir: Path | None = None, tok_dir: Path | None = None,
        base_dir: Path | None = None, ckpt_dir: Path | None = None) -> dict[str, Any]:
    """Build (tiny) or point at (hub) the base model and save the tokenizer + template; returns metrics."""
    shards_dir = shards_dir or paths.DATA / "threads" / "shards"
    tok_dir = tok_dir or paths.MODELS / "tokenizer"
    base_dir = base_dir or paths.MODELS / "base"
    template = chat_template(cfg.chat_template)
    report: dict[str, Any] = {}
    if cfg.source == "hub":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.name)
        tok.chat_template = template
        save_tokenizer(tok, tok_dir)
        base_dir.mkdir(parents=True, exist_ok=True)
        write_json(base_dir / BASE_POINTER, {"name": cfg.name, "dtype": cfg.dtype})
        return {"vocab_size": len(tok), "hub": 1}

    texts = list(iter_thread_texts(shards_dir, cfg.tokenizer.max_texts, cfg.tokenizer.max_chars))
    log.info("training a %d-token BPE on %d texts from %s", cfg.tokenizer.vocab_size, len(texts), shards_dir)
    tok = train_tokenizer(texts, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency, template)
    tok.model_max_length = cfg.tiny.max_position_embeddings
    save_tokenizer(tok, tok_dir)
    model = build_tiny_llama(tok, cfg.tiny, seed)
    report.update(vocab_size=len(tok), corpus_texts=len(texts), n_params=sum(p.numel() for p in model.parameters()))
    if cfg.tiny.pretrain_steps > 0:
        from tasks import trainers

        res = trainers.pretrain(texts, model, tok, cfg.tiny, trainer_cfg, seed, base_dir,
                                ckpt_dir or paths.ROOT / "checkpoints" / "base_model")
        report.update(pretrain_loss=res.train_loss, pretrain_steps=res.global_step, pretrain_seconds=res.seconds)
    else:
        model.save_pretrained(str(base_dir))
    save_tokenizer(tok, base_dir)  # the base folder is a complete HF model folder on its own
    return report
