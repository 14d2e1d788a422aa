"""`esvr chat` (talk to a supporter) and `esvr guard check|eval` (the crisis guard alone); heavy imports inside."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import typer

from tasks.cli.common import fail, load

app = typer.Typer(add_completion=False)
guard_app = typer.Typer(help="The crisis guard that answers suicide/self-harm messages with a safe message.",
                        no_args_is_help=True)

_NONE = ("none", "null", "off", "")


def _helper(flag: str | None, default: str | None) -> str | None:
    """A --tvd/--rg value: absent -> the params value; none/off -> disabled."""
    if flag is None:
        return default
    return None if flag.strip().lower() in _NONE else flag


@app.command()
def chat(
    supporter: str = typer.Option(..., "--supporter", "-s", help="Model folder, models:/NAME@ALIAS (served here "
                                  "on 127.0.0.1) or an OpenAI-compatible base URL (http(s)://…/v1)."),
    show_reasoning: bool = typer.Option(False, "--show-reasoning", help="Show the target values, the reference, the "
                                        "four reasoning steps and whether the reference was adopted."),
    save: Path = typer.Option(None, "--save", help="Keep the transcript in this JSON file (off by default)."),
    model: str = typer.Option(None, "--model", help="Model name at a URL supporter (default: the first it lists)."),
    prompt: str = typer.Option(None, "--prompt", help="auto | supporter | teacher | reference (default: params "
                               "chat.prompt; see docs/chat.md)."),
    tvd: str = typer.Option(None, "--tvd", help="Target value detector URI or URL; 'none' to go without "
                            "(default: params chat.tvd)."),
    rg: str = typer.Option(None, "--rg", help="Reference generator URI or URL; 'none' to go without "
                           "(default: params chat.rg)."),
    locale: str = typer.Option(None, "--locale", help="Locale of the crisis resources, e.g. en-GB, en-US, de-DE "
                               "(default: params guard.locale)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file (relative to the project "
                                     "root)."),
) -> None:
    """Talk to a supporter in the terminal; a crisis message is answered with a safe message and crisis lines."""
    from rich.console import Console

    from tasks.chat import chat as core
    from tasks.chat.guard import Guard, GuardError, event_log

    params = load(params_file)
    cfg = params.chat
    if logging.getLogger().level > logging.DEBUG:  # the terminal shows the conversation, no INFO lines (-v keeps them)
        logging.getLogger().setLevel(logging.WARNING)
    mode = prompt or cfg.prompt
    if mode not in ("auto", *core.PROMPTS):
        fail(f"--prompt {mode!r}: choose auto, supporter, teacher or reference")
    tvd_uri, rg_uri = _helper(tvd, cfg.tvd), _helper(rg, cfg.rg)
    mode = core.choose_prompt(mode, supporter, rg_uri)
    try:
        guard = Guard.load(params.guard)
    except GuardError as e:
        fail(str(e))
    console = Console(highlight=False)
    notes: list[str] = []
    code = 0
    with contextlib.ExitStack() as stack:
        try:
            with console.status("starting the models...", spinner="dots"):
                llm = stack.enter_context(core.open_models(
                    supporter, cfg, tvd_uri, None if mode == "reference" else rg_uri, model, notes,
                    params.llm.max_string_chars))
            conversation = core.Conversation(llm, guard, event_log(params.guard), mode, cfg.history_turns, locale)
        except core.ChatError as e:
            fail(str(e))
        except KeyboardInterrupt:  # Ctrl-C while the models load
            console.print("conversation ended")
            raise typer.Exit(0) from None
        helpers = ", ".join(r for r in (core.TVD, core.RG) if r in llm.roles) or "none"
        banner = (f"esvr chat: supporter {supporter} (prompt: {mode}; helpers: {helpers}). An automated supporter, "
                  "not a therapist. Type a message and press Enter; Ctrl-D or Ctrl-C ends.")
        banner += "".join(f"\nnote: {n}" for n in notes)
        transcript = core.Transcript(save, {"supporter": supporter, "prompt": mode, "tvd": tvd_uri, "rg": rg_uri,
                                            "session": conversation.session}) if save else None
        code = core.run_terminal(conversation, console, show_reasoning, transcript, banner)
    raise typer.Exit(code)


@guard_app.command("check")
def guard_check(
    locale: str = typer.Option(None, "--locale", help="Add the safe message of this locale to crisis lines."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """Read one message per line on stdin; print one JSON line each: {"crisis": true|false, "reason": str}."""
    from tasks.chat.guard import Guard, GuardError

    try:
        guard = Guard.load(load(params_file).guard)
    except GuardError as e:
        fail(str(e))
    for line in sys.stdin:
        text = line.rstrip("\n")
        out = guard.check(text).as_json()
        if locale and out["crisis"]:
            out["safe_message"] = guard.safe_message(locale).text
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        sys.stdout.flush()  # a pipe reader gets each verdict as its line arrives


@guard_app.command("eval")
def guard_eval(
    labelled: Path = typer.Argument(..., help='JSONL of {"text", "crisis": bool} (e.g. tests/fixtures/guard/'
                                    'test.jsonl).'),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """Precision, recall and F1 of the guard on a labelled set, and every error, as JSON."""
    from tasks.chat.guard import Guard, GuardError, evaluate

    rows = []
    for i, line in enumerate(labelled.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            if not isinstance(r.get("text"), str) or not isinstance(r.get("crisis"), bool):
                raise ValueError('needs "text" (string) and "crisis" (true/false)')
        except (ValueError, AttributeError) as e:
            fail(f"{labelled}:{i}: {e}")
        rows.append(r)
    try:
        guard = Guard.load(load(params_file).guard)
    except GuardError as e:
        fail(str(e))
    typer.echo(json.dumps(evaluate(guard, rows), indent=2, ensure_ascii=False))
