"""A loopback OpenAI-compatible server for fault-injection tests and the concurrency benchmark (not a model).

It answers every request in the shape asked for — an instance of the `response_format` JSON schema, a
`Values: A; B; C` line for a `structured_outputs` regex over the value names, free text otherwise — after an
injected latency, and fails a chosen fraction of requests with 429, 500, a timeout (sleeps past the client's
timeout) or 200 with invalid JSON. It counts hits per request `user` tag, so a test can prove that a resumed run
did not re-request finished dialogues.

Run standalone: `python -m tests.fakes.mock_llm --port 8012 --latency 0.3 --fault-rate 0.2`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Request at module level: FastAPI resolves handler annotations in module globals (postponed annotations).
from fastapi import Request

FAULTS = ("429", "500", "timeout", "invalid_json")


@dataclass
class MockState:
    latency_s: float = 0.0
    fault_rate: float = 0.0
    timeout_sleep_s: float = 3.0
    fault_kinds: tuple[str, ...] = FAULTS  # which faults to draw from
    seed: int = 0
    # A test's own answers: called with each request body, its string (if not None) is the answer's content
    # (e.g. an out-of-range judge score on the first attempt, to prove the schema rejects it and re-asks).
    script: Callable[[dict[str, Any]], str | None] | None = None
    seeded: bool = False  # answers also depend on the request's `seed` (sampled candidates differ, as with a model)
    hits: int = 0
    faults: Counter = field(default_factory=Counter)
    hits_by_tag: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


def _h(*parts: Any) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:12], 16)


def instance(schema: dict[str, Any], salt: str) -> Any:
    """A deterministic instance of a (simple) JSON schema: objects, enums, strings, integers, booleans, arrays."""
    if "enum" in schema:
        return schema["enum"][_h(salt, "enum") % len(schema["enum"])]
    t = schema.get("type")
    if t == "object":
        return {k: instance(v, f"{salt}/{k}") for k, v in schema.get("properties", {}).items()}
    if t == "array":
        n = schema.get("minItems", 1)
        return [instance(schema.get("items", {}), f"{salt}/{i}") for i in range(n)]
    if t == "integer":
        lo, hi = schema.get("minimum", 1), schema.get("maximum", 5)
        return lo + _h(salt) % (hi - lo + 1)
    if t == "number":
        return 0.5
    if t == "boolean":
        return False  # the seeker never ends early: dialogues have a fixed length under the mock
    text = f"mock text {_h(salt) % 10_000}"
    return text[: schema.get("maxLength", len(text))]


def regex_answer(rx: str, salt: str) -> str:
    """A `Values: A; B; C` line matching a TVD regex (tasks.domain.sim_prompts.tvd_regex): literal slots as given,
    each `(a|b|…)` slot a name from its group not used before (deterministic per salt)."""
    body = rx.removeprefix("Values: ")
    picked: list[str] = []
    for k, part in enumerate(body.split("; ")):
        if part.startswith("(") and part.endswith(")"):
            names = [re.sub(r"\\(.)", r"\1", n) for n in part[1:-1].split("|")]
            free = [n for n in names if n not in picked] or names
            picked.append(free[_h(salt, k) % len(free)])
        else:
            picked.append(re.sub(r"\\(.)", r"\1", part))
    return "Values: " + "; ".join(picked)


def create_app(state: MockState) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "tests"}]}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"hits": state.hits, "faults": dict(state.faults), "hits_by_tag": dict(state.hits_by_tag)}

    @app.post("/v1/chat/completions")
    async def chat(req: Request) -> Any:
        body = await req.json()
        with state.lock:
            state.hits += 1
            state.hits_by_tag[body.get("user") or ""] += 1
            fault = state.rng.choice(state.fault_kinds) if state.rng.random() < state.fault_rate else None
            if fault:
                state.faults[fault] += 1
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        # retry-after-ms keeps the client's backoff short in tests (openai honours it when <= 120 s)
        if fault == "429":
            return JSONResponse({"error": {"message": "rate limited (injected)"}}, status_code=429,
                                headers={"retry-after-ms": "20"})
        if fault == "500":
            return JSONResponse({"error": {"message": "server error (injected)"}}, status_code=500,
                                headers={"retry-after-ms": "20"})
        if fault == "timeout":
            await asyncio.sleep(state.timeout_sleep_s)
            return PlainTextResponse("too late", status_code=504)
        salt = repr(body.get("messages")) + (f"/seed={body.get('seed')}" if state.seeded else "")
        rf = body.get("response_format") or {}
        so = body.get("structured_outputs") or {}
        scripted = state.script(body) if state.script is not None else None
        if scripted is not None:
            content = scripted
        elif fault == "invalid_json":
            content = '{"truncated": '
        elif rf.get("type") == "json_schema":
            import json

            content = json.dumps(instance(rf["json_schema"]["schema"], salt))
        elif so.get("regex"):
            content = regex_answer(so["regex"], salt)
        else:
            content = f"mock reply {_h(salt) % 10_000}"
        return {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "mock"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}

    return app


class MockServer:
    """The mock in a background thread on 127.0.0.1 (tests); `.url` is the /v1 base URL."""

    def __init__(self, **kwargs: Any):
        import uvicorn

        from tasks.llm.client import free_port

        self.state = MockState(**kwargs)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._server = uvicorn.Server(uvicorn.Config(create_app(self.state), host="127.0.0.1", port=self.port,
                                                     log_level="error", timeout_keep_alive=30))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> MockServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("mock server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def app_from_env() -> Any:
    """App factory for multi-worker runs (each worker process builds its own state from env)."""
    import os

    return create_app(MockState(latency_s=float(os.environ.get("ESVR_MOCK_LATENCY", "0")),
                                fault_rate=float(os.environ.get("ESVR_MOCK_FAULT_RATE", "0")),
                                seeded=os.environ.get("ESVR_MOCK_SEEDED", "0") == "1"))


def main() -> None:  # pragma: no cover - used by the benchmark as a subprocess
    import argparse
    import os

    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seeded", action="store_true", help="answers depend on the request seed too")
    a = ap.parse_args()
    os.environ["ESVR_MOCK_LATENCY"], os.environ["ESVR_MOCK_FAULT_RATE"] = str(a.latency), str(a.fault_rate)
    os.environ["ESVR_MOCK_SEEDED"] = "1" if a.seeded else "0"
    uvicorn.run("tests.fakes.mock_llm:app_from_env", factory=True, host="127.0.0.1", port=a.port, workers=a.workers,
                log_level="error", timeout_keep_alive=30)


if __name__ == "__main__":  # pragma: no cover
    main()
