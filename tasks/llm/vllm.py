"""`esvr serve --engine vllm`: the base model plus the TVD, RG and supporter LoRA adapters behind one vLLM OpenAI API.

* The adapters are registry champions (`serving.adapters`: served name -> models:/NAME@ALIAS), resolved to their
  `adapter/` folders; an adapter not registered yet (the supporter trains after simulate) is skipped with a warning.
* Every adapter must have been trained on `serving.base` (its adapter_config.json says so): vLLM would otherwise
  apply it to the wrong weights without a word.
* Start-up check: one chat request with `response_format={"type": "json_schema", ...}` whose schema admits a
  single answer. vLLM >= 0.10 silently ignores the old `guided_json` parameters, and a server without a structured
  output backend answers in free text; either way the pipeline would then parse prose as JSON for hours, so the
  server is stopped and the command fails naming the cause.

The command is built by `vllm_command` (pure) and tested here against a fake `vllm` (tests/fakes/fake_vllm.py) that
obeys or ignores the constraint; vLLM itself needs the GPU worker (docker/Dockerfile.gpu installs it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.common import registry
from tasks.common.config import ServingParams

log = logging.getLogger(__name__)

#: The name the base model is served under (roles that talk to the plain base use model "base").
BASE_NAME = "base"

#: The start-up probe: a schema with exactly one valid answer, so an unconstrained model cannot pass by luck.
PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"probe": {"type": "string", "enum": ["esvr-structured-output-ok"]}},
    "required": ["probe"],
    "additionalProperties": False,
}


class ServingError(RuntimeError):
    """The server cannot start, or it does not honour response_format; the message says what to fix."""


def adapter_folder(uri: str) -> Path:
    """The LoRA folder of a registered model: its `adapter/` sub-folder (trainers write it), or the folder itself."""
    p = registry.resolve(uri, must_contain=("adapter_config.json", "adapter"))
    if (p / "adapter" / "adapter_config.json").is_file():
        return p / "adapter"
    if (p / "adapter_config.json").is_file():
        return p
    raise ServingError(f"{uri}: {p} holds no LoRA adapter (adapter_config.json); vLLM serves adapters on the base")


def adapter_rank(folder: Path) -> int:
    cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    return int(cfg.get("r", 0))


def check_adapter_base(name: str, folder: Path, base: str) -> None:
    """Fail when `folder`'s adapter was trained on another base than the served one (portable names compared)."""
    cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    trained_on = str(cfg.get("base_model_name_or_path") or "")
    if trained_on and Path(trained_on).name != Path(base).name and trained_on != base:
        raise ServingError(f"adapter {name} ({folder}) was trained on {trained_on!r}, not on the served base {base!r}; "
                           "serve it on its own base or retrain it (`dvc repro`)")


def resolve_adapters(serving: ServingParams) -> dict[str, Path]:
    """{served name: adapter folder} for every registered adapter of `serving.adapters` (absent ones are skipped)."""
    out: dict[str, Path] = {}
    for name, uri in sorted(serving.adapters.items()):
        try:
            folder = adapter_folder(uri)
        except registry.RegistryError as e:
            log.warning("adapter %s not served: %s", name, e)
            continue
        check_adapter_base(name, folder, serving.base)
        rank = adapter_rank(folder)
        if rank > serving.max_lora_rank:
            raise ServingError(f"adapter {name} has rank {rank} > serving.max_lora_rank {serving.max_lora_rank}; "
                               "raise serving.max_lora_rank in params")
        out[name] = folder
    if len(out) > serving.max_loras:
        log.warning("%d adapters > serving.max_loras %d: vLLM swaps them in and out per batch", len(out),
                    serving.max_loras)
    return out


def vllm_command(serving: ServingParams, adapters: dict[str, Path], executable: str = "vllm") -> list[str]:
    """`vllm serve BASE ...` for `serving` and the resolved `adapters` (pure: no process started)."""
    cmd = [executable, "serve", serving.base, "--served-model-name", BASE_NAME,
           "--host", serving.host, "--port", str(serving.port),
           "--max-model-len", str(serving.max_model_len),
           "--gpu-memory-utilization", str(serving.gpu_memory_utilization),
           "--generation-config", "vllm"]  # sampling defaults from the request, not the model's generation_config
    if adapters:
        cmd += ["--enable-lora", "--max-loras", str(serving.max_loras), "--max-lora-rank", str(serving.max_lora_rank),
                "--lora-modules", *[f"{n}={p}" for n, p in sorted(adapters.items())]]
    return cmd


def check_structured_output(base_url: str, model: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Send one json_schema request; raise ServingError unless the answer is exactly the only valid one."""
    import httpx

    body = {"model": model, "temperature": 0.0, "max_tokens": 32,
            "messages": [{"role": "user", "content": "Reply with the JSON object the schema requires."}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "probe", "schema": PROBE_SCHEMA, "strict": True}}}
    try:
        r = httpx.post(f"{base_url.rstrip('/')}/chat/completions", json=body, timeout=timeout_s)
    except httpx.HTTPError as e:
        raise ServingError(f"{base_url}: structured-output probe failed to connect: {e}") from e
    if r.status_code != 200:
        raise ServingError(f"{base_url}: structured-output probe answered HTTP {r.status_code}: {r.text[:300]}")
    try:
        text = r.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ServingError(f"{base_url}: malformed completion to the probe: {r.text[:300]}") from e
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        answer = None
    if answer != {"probe": "esvr-structured-output-ok"}:
        raise ServingError(
            f"{base_url} ({model}) ignored response_format json_schema: it answered {text[:200]!r}. The server has "
            "no structured-output backend, or it is an old/new vLLM that drops the parameter silently; fix the "
            "server (vLLM >= 0.10 honours response_format) before running the pipeline on it")
    return {"model": model, "answer": answer}


def serve(serving: ServingParams, dry_run: bool = False, check: bool = True) -> int:
    """Start vLLM, wait for /health, run the probe on the base and every adapter, then wait on the server.

    Returns the server's exit code; raises ServingError (after stopping the server) when the probe fails."""
    from tasks.llm.client import wait_healthy

    adapters = resolve_adapters(serving)
    exe = shutil.which("vllm") or "vllm"
    cmd = vllm_command(serving, adapters, exe)
    log.info("$ %s", " ".join(cmd))
    if dry_run:
        sys.stdout.write(" ".join(cmd) + "\n")
        return 0
    if not shutil.which("vllm"):
        raise ServingError("vllm is not installed here: it runs on the GPU worker (docker/Dockerfile.gpu installs it); "
                           "on a CPU machine use `esvr serve --engine esvr`")
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    url = f"http://{serving.host}:{serving.port}"
    try:
        wait_healthy(f"{url}/health", serving.startup_timeout_s, proc)
        if check:
            for model in [BASE_NAME, *adapters]:
                check_structured_output(f"{url}/v1", model)
            log.info("vLLM on %s honours response_format for %s", url, [BASE_NAME, *adapters])
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # a container stop reaches vLLM
    return proc.wait()
