"""`esvr serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for the models the pipeline trained.

Why not `transformers serve`: it ignores `response_format`, and a tiny random model never writes parseable JSON by
chance. Here every request that carries `response_format={"type": "json_schema", ...}` (OpenAI) or
`structured_outputs={"regex": ...}` (vLLM's extension, used for the TVD's "Values: A; B; C" line) is decoded under
lm-format-enforcer, so even an untrained 2-layer model answers in the requested shape.

lm-format-enforcer 0.11.3's `integrations.transformers` does not import with transformers 5 (it imports
`PreTrainedTokenizerBase` from the removed `transformers.tokenization_utils`), so the ~20 lines it provides — the
tokenizer data and a logits processor — are re-implemented here on lmfe's core (`TokenEnforcer`), which works.

On the GPU worker the same client config points at `vllm serve` instead (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import logging
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Request at module level: FastAPI resolves handler annotations in module globals (postponed annotations).
from fastapi import Request

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ constrained decoding
def enforcer_tokenizer_data(tokenizer: Any) -> Any:
    """lmfe's TokenEnforcerTokenizerData for a HF tokenizer (same recipe as lmfe's transformers integration)."""
    from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

    vocab_size = len(tokenizer)
    token_0 = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular = []
    for idx in range(vocab_size):
        if idx in special:
            continue
        if not set(tokenizer.decode([idx])) <= _CLEAN:  # partial UTF-8 bytes and control characters break JSON
            continue
        # Decode after a "0" and drop it, so a token that starts a word keeps its leading space.
        after_0 = tokenizer.decode([token_0, idx])[1:]
        alone = tokenizer.decode([idx])
        regular.append((idx, after_0, len(after_0) > len(alone)))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    return TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False, vocab_size)


_CLEAN = set(string.ascii_letters + string.digits + string.punctuation + " ")


def parser_config() -> Any:
    """Printable ASCII only, at most 2 spaces in a row, fields in schema order: short, clean answers."""
    from lmformatenforcer import CharacterLevelParserConfig

    return CharacterLevelParserConfig(alphabet="".join(sorted(_CLEAN)), max_consecutive_whitespaces=2,
                                      force_json_field_order=True)


class EnforcerLogitsProcessor:
    """Masks every token the parser forbids after the generated prefix (prompt excluded)."""

    def __init__(self, tokenizer_data: Any, parser: Any, prompt_len: int):
        from lmformatenforcer import TokenEnforcer

        self.enforcer = TokenEnforcer(tokenizer_data, parser)
        self.prompt_len = prompt_len
        # lmfe's JSON parser does not apply max_consecutive_whitespaces between structural tokens (measured: it
        # allows 12-space tokens before every key), so a tiny model pads its JSON until max_tokens cuts it. We cap
        # whitespace here: no multi-space tokens, and no whitespace-initial token after a whitespace character.
        self.text_of = {idx: text for idx, text, _ in tokenizer_data.regular_tokens}

    def _drop_whitespace(self, allowed: list[int], generated: list[int]) -> list[int]:
        last = self.text_of.get(generated[-1], "") if generated else ""
        after_ws = not generated or (last[-1:].isspace() if last else False)
        keep = [t for t in allowed if not ((txt := self.text_of.get(t)) and (txt.strip() == "" and len(txt) > 1
                                                                           or after_ws and txt[:1].isspace()))]
        return keep or allowed  # never leave the model without a legal token

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for b in range(input_ids.shape[0]):
            generated = input_ids[b, self.prompt_len:].tolist()
            allowed = self.enforcer.get_allowed_tokens(generated).allowed_tokens
            mask[b, self._drop_whitespace(list(allowed), generated)] = 0.0
        return scores + mask


def parser_for(body: dict[str, Any]) -> Any | None:
    """The lmfe parser a request asks for (json_schema / json_object / vLLM regex), or None for free text."""
    from lmformatenforcer import JsonSchemaParser, RegexParser

    so = body.get("structured_outputs") or {}
    if so.get("regex"):
        return RegexParser(so["regex"], parser_config())
    if body.get("guided_regex"):  # vLLM's older spelling
        return RegexParser(body["guided_regex"], parser_config())
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        return JsonSchemaParser(rf["json_schema"]["schema"], parser_config())
    if rf.get("type") == "json_object":
        return JsonSchemaParser(None, parser_config())
    return None


# ------------------------------------------------------------------------------------------ models
@dataclass
class LoadedModel:
    name: str
    path: str
    model: Any
    tokenizer: Any
    _enforcer_data: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def enforcer_data(self) -> Any:
        if self._enforcer_data is None:
            self._enforcer_data = enforcer_tokenizer_data(self.tokenizer)
        return self._enforcer_data


def resolve_model_uri(uri: str) -> str:
    """A HF model or adapter folder from a folder path or a registry URI (tasks.common.registry)."""
    from tasks.common import registry

    return str(registry.resolve(uri, must_contain=("config.json", "adapter_config.json")))


def load_model(name: str, uri: str, threads: int = 2) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    path = resolve_model_uri(uri)
    tok = AutoTokenizer.from_pretrained(path)
    if not (Path(path) / "config.json").is_file():  # a LoRA adapter: its base + the adapter, merged for speed
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch.float32).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    if tok.chat_template is None:
        raise ValueError(f"{path}: tokenizer has no chat template; the train stage must save chat_template.jinja")
    log.info("loaded model %r from %s", name, path)
    return LoadedModel(name, path, model, tok)


def generate(lm: LoadedModel, body: dict[str, Any]) -> tuple[str, int, int, str]:
    """One chat completion: (text, prompt tokens, completion tokens, finish reason)."""
    import torch

    parser = parser_for(body)
    ids = lm.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]
    max_pos = getattr(lm.model.config, "max_position_embeddings", 2048)
    max_new = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
    max_new = max(1, min(max_new, max_pos - 64))  # a tiny model's window (512) keeps >= 64 prompt tokens
    if ids.shape[1] + max_new > max_pos:  # keep the newest context: the end of a dialogue matters most
        ids = ids[:, -(max_pos - max_new):]
    temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new, pad_token_id=lm.tokenizer.pad_token_id,
                                  eos_token_id=lm.tokenizer.eos_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=float(body.get("top_p") or 1.0), top_k=0)
    else:
        kwargs.update(do_sample=False)
    if parser is not None:
        kwargs["logits_processor"] = [EnforcerLogitsProcessor(lm.enforcer_data, parser, ids.shape[1])]
    with lm.lock, torch.no_grad():  # one generate at a time per model: CPU threads are the bottleneck anyway
        if body.get("seed") is not None:
            torch.manual_seed(int(body["seed"]))
        out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    new = out[0, ids.shape[1]:].tolist()
    finish = "stop" if new and new[-1] == lm.tokenizer.eos_token_id else "length"
    text = lm.tokenizer.decode(new, skip_special_tokens=True)
    return text, int(ids.shape[1]), len(new), finish


# ------------------------------------------------------------------------------------------ app
def create_app(models: dict[str, LoadedModel]) -> Any:
    """FastAPI app serving `models` by name (the request's `model` field; the only model when there is one)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title="esvr serve")
    default = next(iter(models)) if len(models) == 1 else None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "esvr"} for n in models]}

    @app.post("/v1/chat/completions")
    async def chat(req: Request) -> Any:
        body = await req.json()
        lm = models.get(body.get("model", "")) or (models[default] if default else None)
        if lm is None:
            return JSONResponse({"error": {"message": f"unknown model {body.get('model')!r}; served: {list(models)}",
                                           "type": "invalid_request_error"}}, status_code=404)
        if body.get("stream"):
            return JSONResponse({"error": {"message": "stream=true is not supported"}}, status_code=400)
        text, n_in, n_out, finish = await asyncio.to_thread(generate, lm, body)
        return {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
                "model": lm.name,
                "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}

    return app


def parse_model_specs(specs: list[str]) -> dict[str, str]:
    """`PATH` or `NAME=PATH` (repeatable) -> {name: path}; a bare path is served under its folder name."""
    out: dict[str, str] = {}
    for s in specs:
        name, sep, uri = s.partition("=")
        if not sep or "/" in name or ":" in name:
            name, uri = Path(s.rstrip("/")).name or s, s
        if name in out:
            raise ValueError(f"model name {name!r} given twice; use NAME=PATH to tell them apart")
        out[name] = uri
    return out


def serve(specs: list[str], host: str = "127.0.0.1", port: int = 8000, threads: int = 2,
          skip_missing: bool = False) -> None:
    """Load the models and serve them until interrupted (SIGTERM/SIGINT stop uvicorn cleanly).

    skip_missing: a registry URI that is not registered yet is left out with a warning (the params' default set
    names the supporter, trained after simulate); models named on the command line must all load."""
    import uvicorn

    from tasks.common.registry import RegistryError

    models = {}
    for n, u in parse_model_specs(specs).items():
        try:
            models[n] = load_model(n, u, threads)
        except RegistryError as e:
            if not skip_missing:
                raise
            log.warning("model %s not served: %s", n, e)
    log.info("serving %s on http://%s:%d/v1", list(models), host, port)
    uvicorn.run(create_app(models), host=host, port=port, log_level="warning")
