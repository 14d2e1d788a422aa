"""The chat template, declared once: every stage that trains, serves or simulates formats turns with it.

`chat_template.jinja` beside a tokenizer is the explicit artifact (alignment-handbook #93): `load_tokenizer()` refuses
a folder without it, so training, inference and the simulator all format turns identically. Both templates wrap the
assistant content in `{% generation %}` markers, which TRL's assistant-only loss needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.common.io import atomic_open


class TemplateError(RuntimeError):
    """Unknown template or a tokenizer folder without its template artifact; the message says which stage to run."""


TEMPLATE_FILE = "chat_template.jinja"
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


def template(name: str) -> str:
    """The Jinja text of a shipped template (`base_model.chat_template` in params)."""
    if name not in TEMPLATES:
        raise TemplateError(f"base_model.chat_template: unknown template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


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
        raise TemplateError(f"{tpl}: chat template artifact missing; run `dvc repro base_model` (or `esvr stage base_model`)")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.chat_template = tpl.read_text(encoding="utf-8")  # the file wins over whatever the tokenizer config holds
    if tok.pad_token is None:  # Llama-3 ships without one; padding is masked, so reusing eos is safe
        tok.pad_token = tok.eos_token
    return tok
