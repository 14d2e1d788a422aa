"""`esvr chat` driven through a pseudo-terminal (pexpect), as a person uses it: replies with their reasoning, a crisis
message answered with the safe message while the model is not called, Ctrl-D and Ctrl-C ending cleanly (also while
the model writes), the saved transcript, guard events without text — against the fault-injecting OpenAI-compatible
fake, and once against a tiny model served locally by `esvr serve`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest
import yaml

from tasks.common import paths
from tests.fakes.mock_llm import MockServer

CRISIS = "I want to kill myself tonight"
PROMPT = "you>"


@pytest.fixture
def params_file(tmp_path) -> Path:
    """The tiny profile with guard events in this test's folder."""
    data = yaml.safe_load((paths.ROOT / "params.yaml").read_text(encoding="utf-8"))
    data["guard"]["events_file"] = str(tmp_path / "guard_events.jsonl")
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return p


def spawn(args: list[str], params_file: Path, timeout: int = 60) -> pexpect.spawn:
    env = {**os.environ, "PYTHONPATH": str(paths.ROOT), "NO_COLOR": "1", "TERM": "xterm"}
    child = pexpect.spawn(sys.executable, ["-m", "tasks.cli.main", "chat", *args, "--params", str(params_file)],
                          cwd=str(paths.ROOT), env=env, encoding="utf-8", timeout=timeout, dimensions=(50, 150))
    child.logfile_read = open(params_file.parent / "terminal.log", "a")  # noqa: SIM115 - read on failure
    return child


def ended_cleanly(child: pexpect.spawn) -> None:
    child.expect("conversation ended")
    child.expect(pexpect.EOF)
    child.close()
    log = Path(child.logfile_read.name).read_text()
    assert child.exitstatus == 0, log
    assert "Traceback" not in log


def test_chat_through_a_terminal_with_a_crisis_message(tmp_path, params_file):
    with MockServer() as mock:
        save = tmp_path / "chat.json"
        child = spawn(["--supporter", mock.url, "--tvd", mock.url, "--rg", mock.url, "--show-reasoning",
                       "--save", str(save)], params_file)
        child.expect(PROMPT)
        child.sendline("I lost my job and I feel useless")
        child.expect("Target values")
        child.expect("Adopted the reference")
        child.expect("supporter>")
        child.expect(PROMPT)
        calls = mock.state.hits
        assert calls == 3  # TVD, RG, supporter

        child.sendline(CRISIS)
        child.expect("support is available")
        child.expect(r"988|116 123|https://findahelpline\.com")
        child.expect(PROMPT)
        assert mock.state.hits == calls, "the model must not be called for a crisis message"

        child.sendline("thank you, I will call them")
        child.expect("supporter>")
        child.expect(PROMPT)
        assert mock.state.hits == calls + 3
        child.sendeof()  # Ctrl-D
        ended_cleanly(child)

    doc = json.loads(save.read_text())
    roles = [t["role"] for t in doc["turns"]]
    assert roles == ["seeker", "supporter"] * 3
    assert doc["turns"][2] == {"role": "seeker", "text": CRISIS, "crisis": True}
    assert doc["turns"][3]["safe_message"] is True
    assert doc["turns"][1]["reasoning"]["adopt_reference"] in ("Yes", "No")
    assert len(doc["turns"][1]["target_values"]) == 3
    (event,) = [json.loads(x) for x in (tmp_path / "guard_events.jsonl").read_text().splitlines()]
    assert event["source"] == "chat" and event["turn"] == 2 and event["session"] == doc["session"]
    assert "kill" not in json.dumps({k: v for k, v in event.items() if k not in ("rule", "kind")})
    assert "tonight" not in (tmp_path / "guard_events.jsonl").read_text()


def test_ctrl_c_ends_cleanly_at_the_prompt_and_while_the_model_writes(params_file):
    with MockServer(latency_s=20.0) as mock:
        child = spawn(["--supporter", mock.url, "--tvd", "none", "--rg", "none"], params_file)
        child.expect(PROMPT)
        child.sendintr()  # Ctrl-C at the prompt
        ended_cleanly(child)

        child = spawn(["--supporter", mock.url, "--tvd", "none", "--rg", "none"], params_file)
        child.expect(PROMPT)
        child.sendline("hello")
        child.expect("writing")  # the spinner: the request is in flight (the fake answers after 20 s)
        child.sendintr()
        ended_cleanly(child)


def test_crisis_message_in_another_locale(params_file):
    with MockServer() as mock:
        child = spawn(["--supporter", mock.url, "--tvd", "none", "--rg", "none", "--locale", "en-GB"], params_file)
        child.expect(PROMPT)
        child.sendline("honestly i just want to die")
        child.expect("116 123")
        child.expect(PROMPT)
        assert mock.state.hits == 0
        child.sendline("this exam is killing me")  # an idiom goes to the model
        child.expect("supporter>")
        child.expect(PROMPT)
        assert mock.state.hits == 1
        child.sendeof()
        ended_cleanly(child)


@pytest.mark.slow
def test_chat_with_a_tiny_model_served_locally(tmp_path, params_file):
    """The tiny-profile path: a model folder, served by `esvr serve` on 127.0.0.1; the TVD constrained to its line."""
    from tests.tiny_chat import build_tiny_chat_model

    model = build_tiny_chat_model(tmp_path / "tiny")
    child = spawn(["--supporter", str(model), "--tvd", str(model), "--rg", str(model), "--prompt", "supporter",
                   "--show-reasoning"], params_file, timeout=240)
    child.expect(PROMPT)
    child.sendline("I lost my job and I feel useless")
    child.expect("Target values")
    child.expect("supporter>")
    child.expect(PROMPT)
    child.sendline(CRISIS)
    child.expect("support is available")
    child.expect(PROMPT)
    child.sendeof()
    ended_cleanly(child)
