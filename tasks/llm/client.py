"""The one LLM client of the pipeline: every role (persona writer, seeker, supporter teacher, judge, TVD, reference
generator) talks to an OpenAI-compatible endpoint through `LLM`.

What it guarantees, so tens of thousands of calls survive crashes, rate limits and bad answers:

* **Retries**: the openai client's own (429, 408/409, 5xx, connection errors, timeouts; backoff 0.5·2^n s, capped
  at 8 s, `Retry-After` honoured), counted per HTTP attempt through an httpx event hook.
* **Re-asks**: an answer that fails its JSON schema (or a caller's check) is sent back with the error, at most
  `max_reasks` times; then `LLMError`.
* **Cache**: every raw answer is stored in sqlite under the hash of everything that changes it (model identity and
  weights fingerprint, messages, temperature, max tokens, response format, seed, CACHE_VERSION) — never the base URL,
  which is a random port in the tiny profile. A re-run or a resume after kill -9 re-pays nothing.
* **Ledger**: calls, cache hits, HTTP attempts, retries, re-asks, tokens and USD per role (prices from params).
* **Budget**: a request that would start after the spend reached `budget_usd` raises `BudgetExceeded`; the stage
  stops and saves what is finished (requests already in flight may overshoot by at most the concurrency).
* **Concurrency**: one semaphore bounds the requests in flight across all roles.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.common.hashing import content_id

log = logging.getLogger(__name__)

# Bump when the request layout or the cached payload changes (old entries then miss instead of being misread).
CACHE_VERSION = "llm-cache-v1"

#: Re-asks sample at least this hot (a greedy model would repeat its invalid answer).
REASK_MIN_TEMPERATURE = 0.7

#: `base_url: local` in params means "the server this stage starts itself on 127.0.0.1".
LOCAL = "local"


#: HTTP attempts of the completion running in this asyncio task (set per call, bumped by the httpx hook).
_ATTEMPTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("esvr_llm_attempts", default=None)


class LLMError(RuntimeError):
    """A call failed for good: transport errors after the client's retries, or invalid answers after re-asks."""


class BudgetExceeded(RuntimeError):
    """The run's spend reached `llm.budget_usd`; everything finished so far is saved and cached."""


# ------------------------------------------------------------------------------------------ roles and ledger
@dataclass(frozen=True)
class Role:
    """A resolved role: where to send it, which model, how to sample, what it costs."""

    name: str
    base_url: str
    model: str
    temperature: float
    max_tokens: int
    api_key: str = "EMPTY"
    fingerprint: str = ""  # weights hash / registry version of a served model: retraining invalidates its answers
    price_prompt_per_mtok: float = 0.0
    price_completion_per_mtok: float = 0.0


@dataclass
class RoleLedger:
    calls: int = 0  # logical calls answered (cache or server)
    cached: int = 0  # answers read from the cache (cost nothing)
    requests: int = 0  # paid completions that came back
    http_attempts: int = 0  # HTTP requests sent (requests + retries + failed)
    retries: int = 0  # http_attempts beyond the first per completion
    reasks: int = 0  # answers that failed validation and were asked again
    failures: int = 0  # calls that raised LLMError
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Ledger:
    """Token/cost/retry counters per role for one run."""

    roles: dict[str, RoleLedger] = field(default_factory=lambda: defaultdict(RoleLedger))

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.roles.values())

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for r in self.roles.values():
            for k, v in asdict(r).items():
                out[k] += v
        return dict(out)

    def metrics(self, prefix: str = "llm") -> dict[str, float]:
        """Flat metrics for MLflow: `llm.<role>.<counter>` and `llm.total.<counter>`."""
        m = {f"{prefix}.total.{k}": float(v) for k, v in self.totals().items()}
        for role, r in sorted(self.roles.items()):
            m.update({f"{prefix}.{role}.{k}": float(v) for k, v in asdict(r).items()})
        return m


# ------------------------------------------------------------------------------------------ cache
class ResponseCache:
    """sqlite key -> raw answer; each put is its own transaction (atomic, survives kill -9)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives a process kill
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                         "created REAL NOT NULL)")

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                         (key, json.dumps(value, ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):
            self._db.close()


# ------------------------------------------------------------------------------------------ schemas
def cap_strings(schema: dict[str, Any], max_chars: int | None) -> dict[str, Any]:
    """Copy of `schema` whose free strings carry maxLength <= max_chars (tiny random models must stop somewhere)."""
    if not max_chars:
        return schema
    s = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node:
                node["maxLength"] = min(int(node.get("maxLength", max_chars)), max_chars)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


_VALIDATORS: dict[str, Any] = {}


def _validator(schema: dict[str, Any]) -> Any:
    """A checked, compiled validator per schema (jsonschema.validate re-checks the schema on every call)."""
    import jsonschema

    key = content_id(schema, 32)
    if key not in _VALIDATORS:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _VALIDATORS[key] = cls(schema)
    return _VALIDATORS[key]


def validate_json(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Parse and validate an answer; ValueError says what is wrong (that text goes back in a re-ask)."""
    import jsonschema

    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at char {e.pos})") from None
    try:
        _validator(schema).validate(obj)
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "<root>"
        raise ValueError(f"JSON does not match the schema at {path}: {e.message}") from None
    return obj


# ------------------------------------------------------------------------------------------ the client
class LLM:
    """Async, cached, budgeted, concurrency-bounded chat client over OpenAI-compatible endpoints."""

    def __init__(self, roles: dict[str, Role], cache_path: str | Path, *, max_concurrency: int = 8,
                 timeout_s: float = 60.0, max_retries: int = 5, max_reasks: int = 3, budget_usd: float = 1.0,
                 max_string_chars: int | None = None):
        import jsonschema  # noqa: F401 - imported here, not on the first answer inside the event loop (~3 s)
        import openai  # noqa: F401

        self.roles = roles
        self.cache = ResponseCache(cache_path)
        self.ledger = Ledger()
        for r in roles:  # every role appears in the metrics, with zeros when nothing was asked
            self.ledger.roles[r] = RoleLedger()
        self.max_reasks = max_reasks
        self.budget_usd = budget_usd
        self.max_string_chars = max_string_chars
        self._sem = asyncio.Semaphore(max_concurrency)
        self._timeout_s, self._max_retries, self._max_concurrency = timeout_s, max_retries, max_concurrency
        self._clients: dict[str, Any] = {}

    def _client(self, role: Role) -> Any:
        """One AsyncOpenAI per (base_url, key); its httpx client counts every HTTP attempt (retries included)."""
        import httpx2  # the openai package's own httpx fork (ENV-NOTES: http_client is typed httpx2.AsyncClient)
        import openai

        k = f"{role.base_url}|{role.api_key}"
        if k not in self._clients:
            async def on_request(request: Any) -> None:
                counter = _ATTEMPTS.get()
                if counter is not None:  # the hook runs in the calling task, so the context var is that call's
                    counter[0] += 1

            http = openai.DefaultAsyncHttpxClient(
                event_hooks={"request": [on_request]},
                limits=httpx2.Limits(max_connections=self._max_concurrency * 2,
                                                   max_keepalive_connections=self._max_concurrency * 2))
            self._clients[k] = openai.AsyncOpenAI(base_url=role.base_url, api_key=role.api_key, http_client=http,
                                                  max_retries=self._max_retries, timeout=self._timeout_s)
        return self._clients[k]

    def request_key(self, role: Role, body: dict[str, Any]) -> str:
        """Cache key: everything that changes the answer, nothing that does not (base URL, API key)."""
        return content_id({"v": CACHE_VERSION, "model": role.model, "fingerprint": role.fingerprint, **body}, n=32)

    async def _complete(self, role: Role, body: dict[str, Any], tag: str | None) -> dict[str, Any]:
        """One completion, from the cache or the server (then cached). Returns {content, usage, cached}."""
        import openai

        led = self.ledger.roles[role.name]
        key = self.request_key(role, body)
        hit = self.cache.get(key)
        if hit is not None:
            led.cached += 1
            return {**hit, "cached": True}
        if self.ledger.cost_usd >= self.budget_usd:
            raise BudgetExceeded(f"spent ${self.ledger.cost_usd:.4f} >= llm.budget_usd ${self.budget_usd}; "
                                 "raise the budget in params.yaml and re-run: paid answers are cached")
        client = self._client(role)
        payload: dict[str, Any] = {"model": role.model, "messages": body["messages"],
                                   "temperature": body["temperature"], "max_tokens": body["max_tokens"]}
        for k in ("seed", "response_format", "structured_outputs"):  # structured_outputs: vLLM's extension
            if body.get(k) is not None:
                payload[k] = body[k]
        if tag:
            payload["user"] = tag
        async with self._sem:
            counter = [0]
            _ATTEMPTS.set(counter)
            try:
                # client.post (the openai package's documented escape hatch for raw requests) keeps its retries and
                # errors but skips chat.completions.create's typed-params transform and response models: ~5 ms of
                # CPU per call, which at 32 in flight is what limits throughput on a small machine
                resp = await client.post("/chat/completions", cast_to=object, body=payload)  # plain JSON dict
            except (openai.APIError, openai.APIConnectionError, openai.APITimeoutError) as e:
                n = counter[0]
                led.http_attempts += n
                led.retries += max(0, n - 1)
                led.failures += 1
                raise LLMError(f"role {role.name} ({role.model} at {role.base_url}): {type(e).__name__}: {e}") from e
            n = counter[0]
        led.http_attempts += n
        led.retries += max(0, n - 1)
        led.requests += 1
        try:
            choice = resp["choices"][0]
            u = resp.get("usage") or {}
            usage = {"prompt_tokens": int(u.get("prompt_tokens") or 0),
                     "completion_tokens": int(u.get("completion_tokens") or 0)}
            out = {"content": choice["message"].get("content") or "", "usage": usage,
                   "finish_reason": choice.get("finish_reason")}
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            led.failures += 1
            raise LLMError(f"role {role.name}: malformed completion from {role.base_url}: {str(resp)[:200]}") from e
        led.prompt_tokens += usage["prompt_tokens"]
        led.completion_tokens += usage["completion_tokens"]
        led.cost_usd += (usage["prompt_tokens"] * role.price_prompt_per_mtok
                         + usage["completion_tokens"] * role.price_completion_per_mtok) / 1e6
        self.cache.put(key, out)
        return {**out, "cached": False}

    async def ask(self, role_name: str, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                  schema_name: str = "answer", regex: str | None = None,
                  check: Callable[[Any], Any] | None = None, seed: int | None = None,
                  tag: str | None = None) -> Any:
        """Ask `role_name`; returns the validated answer (a dict under `schema`, else the text, or `check`'s result).

        `check(answer)` may transform the answer or raise ValueError (its message is sent back in the re-ask).
        `tag` is sent as the OpenAI `user` field (logs, fault-injection servers); it is not part of the cache key.
        """
        role = self.roles[role_name]
        led = self.ledger.roles[role_name]
        sent_schema = cap_strings(schema, self.max_string_chars) if schema else None
        msgs = list(messages)
        for attempt in range(self.max_reasks + 1):
            # a greedy model repeats its invalid answer verbatim: re-asks sample instead
            temperature = role.temperature if attempt == 0 else max(role.temperature, REASK_MIN_TEMPERATURE)
            body: dict[str, Any] = {"messages": msgs, "temperature": temperature, "max_tokens": role.max_tokens,
                                    "seed": None if seed is None else seed + attempt,
                                    "attempt": attempt}  # in the key: identical re-asks must not hit the cache
            if sent_schema is not None:
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": schema_name, "schema": sent_schema, "strict": True}}
            if regex is not None:
                body["structured_outputs"] = {"regex": regex}
            out = await self._complete(role, body, tag)
            text = out["content"]
            try:
                # validated against the caller's schema: the string cap only helps decoding stop (lm-format-enforcer
                # may overshoot maxLength by a token), it is not part of the answer's contract
                value: Any = validate_json(text, schema) if schema is not None else text.strip()
                if check is not None:
                    value = check(value)
                led.calls += 1
                return value
            except ValueError as e:
                if attempt == self.max_reasks:
                    led.failures += 1
                    raise LLMError(f"role {role_name}: answer still invalid after {self.max_reasks} re-asks: {e}; "
                                   f"last answer: {text[:200]!r}") from None
                led.reasks += 1
                log.debug("role %s: invalid answer (%s); re-asking", role_name, e)
                msgs = [*messages, {"role": "assistant", "content": text},
                        {"role": "user", "content": f"That answer is invalid: {e}. Answer again, following the "
                                                    "required format exactly and nothing else."}]
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.close()
        self.cache.close()


# ------------------------------------------------------------------------------------------ building from params
def role_from_params(name: str, p: Any, local_url: str | None, fingerprints: dict[str, str],
                     served: dict[str, str] | None = None) -> Role:
    """Resolve one params role: `local` base URLs point at the stage's own server; keys come from env only.

    `served`: {model name: registry URI} of the adapters a remote server (vLLM) serves (`serving.adapters`); a
    remote role on one of them gets that URI's registry fingerprint, so retraining it re-asks instead of replaying.
    A hosted model (gpt-4o-mini) has none: its name is all we know of its weights."""
    if p.base_url == LOCAL:
        if local_url is None:
            raise ValueError(f"llm.roles.{name}.base_url is 'local' but no local server is running")
        base_url, fp = local_url, fingerprints.get(p.model, "")
    else:
        base_url, fp = p.base_url, ""
        if served and p.model in served:
            from tasks.common import registry

            try:
                fp = registry.fingerprint(served[p.model])
            except registry.RegistryError as e:
                raise ValueError(f"llm.roles.{name}: model {p.model!r} is served from {served[p.model]}, which is not "
                                 f"registered ({e}); train it first (`dvc repro`)") from e
    key = "EMPTY"
    if p.api_key_env:
        key = os.environ.get(p.api_key_env, "")
        if not key:
            raise ValueError(f"llm.roles.{name}.api_key_env names {p.api_key_env}, which is unset; export it or put "
                             f"it in .env (never in params.yaml)")
    return Role(name=name, base_url=base_url, model=p.model, temperature=p.temperature, max_tokens=p.max_tokens,
                api_key=key, fingerprint=fp, price_prompt_per_mtok=p.price_prompt_per_mtok,
                price_completion_per_mtok=p.price_completion_per_mtok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"local model server exited with code {proc.returncode} before it was healthy")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s")


@contextlib.contextmanager
def local_server(models: dict[str, str], timeout_s: float = 180.0, log_file: Path | None = None) -> Iterator[str]:
    """Start `esvr serve` for {name: model dir} on 127.0.0.1 at a random free port; yield its /v1 URL; stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "tasks.cli.main", "serve", "--port", str(port)]
    for name, path in models.items():
        cmd += ["--model", f"{name}={path}"]
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - closed below
    from tasks.common import paths

    # this checkout's code, whatever the venv's editable install points at
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=paths.ROOT, env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s, proc)
        log.info("local model server on port %d serving %s (pid %d)", port, sorted(models), proc.pid)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not isinstance(out, int):  # a log file, not subprocess.DEVNULL
            out.close()


def model_fingerprints(models: dict[str, str]) -> dict[str, str]:
    """Weights hash of each local model (folder, or registry URI resolved to its folder) plus the hash of the serving
    code (part of the cache key: retraining, a new champion, or a change in how tasks/llm/serve.py decodes, re-asks
    instead of replaying answers the old model or code produced)."""
    from tasks.common import registry
    from tasks.common.hashing import sha256_file, sha256_tree

    server = sha256_file(Path(__file__).with_name("serve.py"))[:8]
    return {name: f"{sha256_tree(registry.resolve(uri))[:16]}-{server}" for name, uri in models.items()}


def _local_uri(uri: str, root: Path) -> str:
    """A local model's URI as the server gets it: registry URIs as they are, folders made absolute under `root`."""
    from tasks.common import registry

    return uri if registry.is_registry_uri(uri) else str((root / uri).resolve())


@contextlib.contextmanager
def open_llm(llm_params: Any, roles: list[str], root: Path, log_dir: Path | None = None,
             served: dict[str, str] | None = None) -> Iterator[LLM]:
    """An `LLM` for the named roles; starts the local server first when any of them says `base_url: local`.
    `served`: the adapters a remote server serves (see `role_from_params`)."""
    needed = {llm_params.roles[r].model for r in roles if llm_params.roles[r].base_url == LOCAL}
    missing = sorted(needed - set(llm_params.local_models))
    if missing:
        raise ValueError(f"llm.local_models lacks {missing}, named by roles with base_url 'local'")
    models = {n: _local_uri(llm_params.local_models[n], root) for n in sorted(needed)}
    with contextlib.ExitStack() as stack:
        url = None
        fps: dict[str, str] = {}
        if models:
            fps = model_fingerprints(models)
            url = stack.enter_context(local_server(models, llm_params.serve_startup_timeout_s,
                                                   (log_dir / "serve.log") if log_dir else None))
        resolved = {r: role_from_params(r, llm_params.roles[r], url, fps, served) for r in roles}
        llm = LLM(resolved, root / llm_params.cache_dir / "responses.sqlite",
                  max_concurrency=llm_params.max_concurrency, timeout_s=llm_params.timeout_s,
                  max_retries=llm_params.max_retries, max_reasks=llm_params.max_reasks,
                  budget_usd=llm_params.budget_usd, max_string_chars=llm_params.max_string_chars)
        try:
            yield llm  # the caller awaits llm.aclose() inside its event loop (the HTTP clients belong to it)
        finally:
            llm.cache.close()


def stable_seed(*parts: Any) -> int:
    """A 31-bit seed from any JSON-able parts (per-call seeds make sampling reproducible)."""
    return int(content_id(list(parts), 8), 16) >> 1
