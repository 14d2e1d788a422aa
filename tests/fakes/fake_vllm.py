"""A stand-in for the `vllm` executable (fault injection for `esvr serve --engine vllm`): `vllm serve BASE --host H
--port P [--lora-modules NAME=PATH ...]` serves an OpenAI-compatible API that either obeys `response_format`
json_schema (FAKE_VLLM_MODE=obey) or ignores it and answers prose (ignore), as a vLLM without a structured-output
backend, or one that drops unknown parameters, would. It writes its argv to $FAKE_VLLM_ARGV and exits after
$FAKE_VLLM_EXIT_AFTER chat requests (0 = never)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

# Request at module level: FastAPI resolves handler annotations in module globals (postponed annotations).
from fastapi import Request


def instance(schema: dict[str, Any]) -> Any:
    """The simplest value valid under `schema` (enums: their first value)."""
    if "enum" in schema:
        return schema["enum"][0]
    t = schema.get("type")
    if t == "object":
        return {k: instance(v) for k, v in schema.get("properties", {}).items() if k in schema.get("required", [])}
    if t == "array":
        return []
    return {"string": "x", "integer": 0, "number": 0.0, "boolean": False}.get(t, None)


def main(argv: list[str]) -> None:
    import uvicorn
    from fastapi import FastAPI

    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--lora-modules", nargs="*", default=[])
    args, _ = ap.parse_known_args(argv)
    if os.environ.get("FAKE_VLLM_ARGV"):
        with open(os.environ["FAKE_VLLM_ARGV"], "w", encoding="utf-8") as f:
            json.dump(argv, f)
    mode = os.environ.get("FAKE_VLLM_MODE", "obey")
    exit_after = int(os.environ.get("FAKE_VLLM_EXIT_AFTER", "0"))
    names = [args.served_model_name or args.model] + [m.split("=", 1)[0] for m in args.lora_modules]
    seen = {"n": 0}
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(req: Request) -> Any:
        body = await req.json()
        rf = body.get("response_format") or {}
        if mode == "obey" and rf.get("type") == "json_schema":
            text = json.dumps(instance(rf["json_schema"]["schema"]))
        else:
            text = "Sure! Here is a friendly answer in plain words."
        seen["n"] += 1
        if exit_after and seen["n"] >= exit_after:
            threading.Timer(0.5, lambda: os._exit(0)).start()
        if body.get("model") not in names:
            return {"error": {"message": f"model {body.get('model')} not served"}}
        return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
