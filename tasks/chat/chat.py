"""`esvr chat`: talk to a supporter in the terminal, with the crisis guard in front of every model turn.

A turn: the guard checks the seeker's message; a crisis message gets the fixed safe message (tasks/chat/guard.py) and
no model is called. Otherwise the target value detector names the values to reinforce, the reference generator
writes a reference reply for them, and the supporter answers — how it is asked depends on what it is (`prompt`):

* `supporter`: the trained student (models:/supporter@dpo): `supporter_format.supporter_messages`, answer in the
  4-step format of tasks/domain/supporter_format.py;
* `teacher`: any instruction-following model (an OpenAI-compatible URL, the tiny base): the simulation teacher's
  prompt and JSON schema (tasks/domain/sim_prompts.py), turned into the same format with `format_answer`;
* `reference`: the reference generator itself answers (its own prompt); there are no reasoning steps.
* `auto`: `reference` for models:/reference-generator@… (or the folder chat.rg names), `teacher` for an http(s)
  URL, `supporter` otherwise.

Models named by a folder or a registry URI are served by one local `esvr serve` on 127.0.0.1 (random port);
http(s) URLs are used as they are. Nothing the seeker types is written to disk unless `--save FILE` is given: the
LLM client's cache lives in memory and guard events carry no text.

Core: `Conversation` (one dialogue over an `LLM`; no terminal, no files). Shells: `open_models` (serving),
`run_terminal` (rich), `Transcript` (the --save file).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.chat.guard import EventLog, Guard
from tasks.common.config import ChatParams
from tasks.domain import prompts, supporter_format
from tasks.domain.sim_prompts import teacher_messages, teacher_schema, teacher_system, tvd_regex
from tasks.llm.client import LLM, LLMError, Role
from tasks.simulate import check_nonempty, check_reference, check_tvd

#: In a chat the teacher writes the one reply the person reads (no alternatives: nobody trains on this turn).
CHAT_TEACHER_SCHEMA = teacher_schema(alternatives=False)
CHAT_TEACHER_SYSTEM = teacher_system(alternatives=False)

log = logging.getLogger(__name__)

SUPPORTER, TVD, RG = "supporter", "tvd", "rg"
PROMPTS = ("supporter", "teacher", "reference")
#: The registered name of the reference generator (tasks/train/common.RG_MODEL), matched by `auto`.
RG_REGISTRY_PREFIX = "models:/reference-generator"


class ChatError(RuntimeError):
    """Chat cannot start (a model that resolves to nothing, a URL that lists no model); the message says the fix."""


def is_url(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(("http://", "https://"))


def choose_prompt(prompt: str, supporter: str, rg: str | None) -> str:
    """The prompt style for `supporter` (see the module docstring)."""
    if prompt != "auto":
        return prompt
    if is_url(supporter):
        return "teacher"
    if supporter.startswith(RG_REGISTRY_PREFIX) or (rg is not None and not is_url(rg) and supporter == rg):
        return "reference"
    return "supporter"


# ------------------------------------------------------------------------------------------ the core
@dataclass
class Reply:
    """One supporter turn as the terminal shows it."""

    text: str  # what the seeker sees
    crisis: bool = False
    guard_reason: str = ""
    fields: dict[str, str] | None = None  # the 4 steps (supporter_format.parse), None when absent or malformed
    target_values: list[str] = field(default_factory=list)
    reference: str | None = None
    prompt: str = ""
    raw: str = ""  # the model's whole answer
    notes: list[str] = field(default_factory=list)  # helpers that failed this turn (the reply still came)
    error: str | None = None  # the supporter itself failed: no reply this turn

    @property
    def malformed(self) -> bool:
        return self.prompt in ("supporter", "teacher") and not self.crisis and self.error is None and not self.fields


class Conversation:
    """One dialogue: the guard, then TVD -> RG -> supporter, over the roles `llm` has (tvd/rg are optional)."""

    def __init__(self, llm: LLM, guard: Guard, events: EventLog, prompt: str, history_turns: int,
                 locale: str | None = None, session: str | None = None):
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
        if prompt == "reference" and TVD not in llm.roles:
            raise ChatError("the reference generator answers for target values: it needs a target value detector "
                            "(chat.tvd or --tvd)")
        self.llm, self.guard, self.events, self.prompt = llm, guard, events, prompt
        self.history_turns, self.locale = history_turns, locale
        self.session = session or uuid.uuid4().hex[:12]
        self.history: list[tuple[str, str]] = []  # what the models see: crisis exchanges are left out
        self.turns = 0

    async def reply(self, text: str) -> Reply:
        """The answer to one seeker message."""
        self.turns += 1
        verdict = self.guard.check(text)
        if verdict.crisis:
            self.events.write(self.guard.event(verdict, "chat", self.locale, self.session, self.turns))
            return Reply(self.guard.safe_message(self.locale).text, crisis=True, guard_reason=verdict.reason,
                         prompt=self.prompt)
        self.history.append(("seeker", text.strip()))
        window = self.history[-self.history_turns:]
        out = Reply("", prompt=self.prompt)
        if TVD in self.llm.roles:
            try:
                out.target_values = await self.llm.ask(TVD, prompts.tvd_messages(window), regex=tvd_regex(),
                                                       check=check_tvd)
            except LLMError as e:
                out.notes.append(f"target values unavailable this turn ({e})")
        if RG in self.llm.roles and self.prompt != "reference" and out.target_values:
            try:
                out.reference = await self.llm.ask(RG, prompts.rg_prompt(window, out.target_values),
                                                   check=check_reference)
            except LLMError as e:
                out.notes.append(f"reference unavailable this turn ({e})")
        try:
            await self._answer(window, out)
        except LLMError as e:
            out.error = str(e)
            return out
        self.history.append(("supporter", out.text))
        return out

    async def _answer(self, window: list[tuple[str, str]], out: Reply) -> None:
        if self.prompt == "teacher":
            if out.target_values:
                msgs = teacher_messages(window, out.target_values, out.reference or supporter_format.NO_INPUT,
                                        system=CHAT_TEACHER_SYSTEM)
            else:  # the teacher prompt names target values; without a TVD it says so instead of inventing some
                msgs = teacher_messages(window, [supporter_format.NO_INPUT],
                                        out.reference or supporter_format.NO_INPUT, system=CHAT_TEACHER_SYSTEM)
            obj = await self.llm.ask(SUPPORTER, msgs, schema=CHAT_TEACHER_SCHEMA, schema_name="supporter_turn",
                                     check=check_nonempty(("response",)))
            out.raw = supporter_format.format_answer(**obj)
        elif self.prompt == "reference":
            out.raw = await self.llm.ask(SUPPORTER, prompts.rg_prompt(window, out.target_values),
                                         check=check_reference)
        else:
            out.raw = await self.llm.ask(SUPPORTER, supporter_format.supporter_messages(
                window, out.target_values, out.reference), check=check_reference)
        out.fields = supporter_format.parse(out.raw) if self.prompt != "reference" else None
        out.text = supporter_format.response_of(out.raw)


# ------------------------------------------------------------------------------------------ serving
@dataclass(frozen=True)
class Endpoint:
    """Where one role is answered: an OpenAI-compatible base URL and the model name there."""

    base_url: str
    model: str
    api_key: str = "EMPTY"


def list_models(base_url: str, api_key: str, timeout_s: float) -> list[str]:
    import httpx

    try:
        r = httpx.get(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"},
                      timeout=timeout_s)
        r.raise_for_status()
        return [m["id"] for m in r.json().get("data", [])]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        raise ChatError(f"{base_url}: cannot list its models ({e}); name one with --model") from e


@contextlib.contextmanager
def open_models(supporter: str, cfg: ChatParams, tvd: str | None, rg: str | None, model: str | None = None,
                notes: list[str] | None = None, max_string_chars: int | None = None) -> Iterator[LLM]:
    """An in-memory-cached `LLM` with roles supporter (+ tvd, rg when they resolve); local models are served by one
    `esvr serve` for the duration. Helpers that resolve to nothing are skipped with a note (chat.missing_helpers:
    warn) or stop the chat (fail). `max_string_chars` (llm.max_string_chars) caps the teacher schema's strings when
    the supporter is served here: a tiny model stops writing a JSON string only at a cap."""
    from tasks.common.registry import RegistryError
    from tasks.llm.client import local_server
    from tasks.llm.serve import resolve_model_uri  # what `esvr serve` itself accepts: a folder or a registry URI

    notes = notes if notes is not None else []
    api_key = (os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else "") or "EMPTY"
    local: dict[str, Path] = {}  # role -> folder
    remote: dict[str, str] = {}  # role -> base URL
    for role, uri in ((SUPPORTER, supporter), (TVD, tvd), (RG, rg)):
        if uri is None:
            continue
        if is_url(uri):
            remote[role] = uri
            continue
        try:
            local[role] = Path(resolve_model_uri(uri))
        except RegistryError as e:
            if role == SUPPORTER or cfg.missing_helpers == "fail":
                raise ChatError(f"{role} {uri}: {e}") from e
            notes.append(f"{role} off: {e}")
            log.info("chat: %s off: %s", role, e)  # shown to the person in the banner
    served: dict[str, str] = {}  # served model name -> folder (one name per distinct folder)
    name_of: dict[str, str] = {}
    for role, path in local.items():
        name = next((n for n, p in served.items() if p == str(path)), role)
        served.setdefault(name, str(path))
        name_of[role] = name
    with contextlib.ExitStack() as stack:
        endpoints: dict[str, Endpoint] = {}
        if served:
            url = stack.enter_context(local_server(served, cfg.serve_startup_timeout_s))
            endpoints.update({role: Endpoint(url, name_of[role]) for role in local})
        for role, url in remote.items():
            name = model if (role == SUPPORTER and model) else list_models(url, api_key, cfg.timeout_s)[0]
            endpoints[role] = Endpoint(url, name, api_key)
        roles = {role: Role(name=role, base_url=e.base_url, model=e.model, temperature=cfg.temperature,
                            max_tokens={SUPPORTER: cfg.max_tokens, TVD: cfg.tvd_max_tokens,
                                        RG: cfg.rg_max_tokens}[role], api_key=e.api_key)
                 for role, e in endpoints.items()}
        # ":memory:": the cache must not keep what the seeker typed on disk; chat prices nothing, so no budget
        llm = LLM(roles, ":memory:", max_concurrency=2, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                  max_reasks=cfg.max_reasks, budget_usd=float("inf"),
                  max_string_chars=max_string_chars if SUPPORTER in local else None)
        try:
            yield llm
        finally:
            llm.cache.close()


# ------------------------------------------------------------------------------------------ transcript (--save)
class Transcript:
    """The conversation as shown, rewritten atomically after every turn (a crash keeps what was said). Its `turns`
    use the review page's format (`{"role": "seeker"|"supporter", "text"}`), so a saved chat can be one side of a
    review pair (docs/review.md)."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = path
        self.doc: dict[str, Any] = {**meta, "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                    "turns": []}

    def add(self, seeker: str, reply: Reply) -> None:
        turns = self.doc["turns"]
        turns.append({"role": "seeker", "text": seeker, **({"crisis": True} if reply.crisis else {})})
        if reply.error is None:
            turns.append(self._supporter_turn(reply))
        self.flush()

    @staticmethod
    def _supporter_turn(reply: Reply) -> dict[str, Any]:
        t: dict[str, Any] = {"role": "supporter", "text": reply.text}
        if reply.crisis:
            t["safe_message"] = True
        else:
            t.update(target_values=reply.target_values, reference=reply.reference, reasoning=reply.fields)
        return t

    def flush(self) -> None:
        from tasks.common.io import atomic_open

        with atomic_open(self.path, "w") as f:
            json.dump(self.doc, f, ensure_ascii=False, indent=2)


# ------------------------------------------------------------------------------------------ terminal (rich)
def render_reply(console: Any, reply: Reply, show_reasoning: bool) -> None:
    """Print one reply. Every model or seeker text goes in as `Text` (never markup): a model writing "[red]" or
    ANSI-looking output cannot restyle the terminal."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    if reply.crisis:
        console.print(Panel(Text(reply.text), title="support is available", border_style="yellow",
                            title_align="left"))
        return
    for note in reply.notes:
        console.print(Text(f"note: {note}", style="dim"))
    if reply.error is not None:
        console.print(Text(f"(the supporter did not answer: {reply.error})", style="red"))
        return
    if show_reasoning:
        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(style="bold magenta", no_wrap=True)
        table.add_column()
        table.add_row("Target values", Text("; ".join(reply.target_values) or "(none)"))
        if reply.prompt != "reference":
            table.add_row("Reference", Text(reply.reference or "(none)"))
        if reply.fields:
            labels = supporter_format.LABELS
            table.add_row(labels["issue_and_state"], Text(reply.fields["issue_and_state"]))
            table.add_row(labels["reference_key_content"], Text(reply.fields["reference_key_content"]))
            adopt = reply.fields["adopt_reference"] + (f" - {reply.fields['adopt_reason']}"
                                                       if reply.fields["adopt_reason"] else "")
            table.add_row("Adopted the reference", Text(adopt))
            table.add_row(labels["strategy"], Text(reply.fields["strategy"]))
        elif reply.prompt == "reference":
            table.add_row("Reasoning", Text("(the reference generator replies directly: no reasoning steps)"))
        else:
            table.add_row("Reasoning", Text("(the answer did not follow the 4-step format; shown as it came)"))
        console.print(Panel(table, title="reasoning", border_style="magenta", title_align="left"))
    console.print(Text.assemble(("supporter> ", "bold green"), Text(reply.text)))


def run_terminal(conversation: Conversation, console: Any, show_reasoning: bool, transcript: Transcript | None,
                 banner: str) -> int:
    """Read seeker lines until Ctrl-D / Ctrl-C (both end cleanly, exit code 0)."""
    from rich.text import Text

    console.print(Text(banner, style="dim"))
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ")
            except EOFError:
                break
            if not line.strip():
                continue
            with console.status("the supporter is writing...", spinner="dots"):
                reply = loop.run_until_complete(conversation.reply(line))
            render_reply(console, reply, show_reasoning)
            if transcript is not None:
                transcript.add(line.strip(), reply)
    except KeyboardInterrupt:
        pass  # Ctrl-C at the prompt or while the model writes: end the conversation, not with a traceback
    finally:
        # Ctrl-C while the model writes leaves that turn's task pending: cancel it before closing the clients, or
        # it would wake up on a closed client and print a traceback
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):  # closing HTTP clients of an interrupted loop may itself raise
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(conversation.llm.aclose())
        loop.close()
        console.print()
        msg = f"conversation ended; transcript saved to {transcript.path}" if transcript else "conversation ended"
        console.print(Text(msg, style="dim"))
    return 0
