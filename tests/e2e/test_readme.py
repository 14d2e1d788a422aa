"""Every command in the README's ```bash blocks runs, in a fresh shell, the way the README tells a newcomer to get
`esvr` and `dvc` on the PATH (`source .venv/bin/activate`), so a renamed command, flag or make target fails here.

Commands that would take long or need the network run in a checking form that still exercises the command: make
targets with `make -n` (the target exists and expands), the DAG (`dvc repro`, `dvc exp run`: hours of CPU, and
`--dry` needs upstream outputs) as `dvc dag` plus `--help`, long-running servers and downloads with `--help`. The rest
(config check/use, help) run for real in a temporary copy of the project.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.common import paths

README = paths.ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
# (program, first argument or None) -> how to check it without its side effect (network, hours of CPU, a server)
HELP_INSTEAD = {("esvr", "pipeline"), ("esvr", "data"), ("esvr", "serve"), ("esvr", "simulate"), ("esvr", "stage"),
                ("esvr", "chat"), ("esvr", "review"), ("prefect", None), ("mlflow", None)}
DRY = {("dvc", "repro"), ("dvc", "exp")}


def readme_commands(text: str) -> list[str]:
    """Shell command lines of the ```bash blocks (comments dropped; `&&` chains split)."""
    out: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            out += [c.strip() for c in line.split("&&") if c.strip()]
    return out


def checking_form(cmd: str) -> str | None:
    """The command as the test runs it (None: handled by the test itself, e.g. `source`)."""
    words = shlex.split(cmd)
    env = []
    while words and re.match(r"^[A-Z_]+=", words[0]):
        env.append(cmd.split()[len(env)])  # assignments stay as written (quoting would make them a command name)
        words.pop(0)
    prefix = " ".join(env + [""]) if env else ""
    prog, arg = words[0], (words[1] if len(words) > 1 else None)
    if prog == "source":
        return None
    if prog == "make":
        return shlex.join(["make", "-n", *words[1:]])
    if (prog, arg) in DRY:  # the graph parses (every stage, cmd, dep) and the subcommand exists
        at = 3 if arg == "exp" else 2
        return "dvc dag >/dev/null && " + prefix + shlex.join([*words[:at], "--help"])
    if (prog, arg) in HELP_INSTEAD or (prog, None) in HELP_INSTEAD:
        return prefix + shlex.join([*[w for w in words if not w.startswith("-")][:3], "--help"])
    if prog in {"scripts/gpu_smoke.sh", "bash"}:
        return shlex.join(["bash", "-n", *(words[1:] if prog == "bash" else words)])
    return cmd


def test_readme_lists_the_two_commands_and_how_to_get_esvr():
    cmds = readme_commands(README.read_text(encoding="utf-8"))
    assert cmds[:2] == ["make pipeline", "make test"]
    assert "source .venv/bin/activate" in cmds


def test_checking_forms():
    assert checking_form("make pipeline") == "make -n pipeline"
    assert checking_form("dvc repro") == "dvc dag >/dev/null && dvc repro --help"
    assert checking_form("ESVR_ROOT=$PWD prefect worker start --pool esvr-gpu") == "ESVR_ROOT=$PWD prefect worker start --help"
    assert checking_form("dvc exp run --set-param seed=7") == "dvc dag >/dev/null && dvc exp run --help"
    assert checking_form("esvr data fetch --from-origin") == "esvr data fetch --help"
    assert checking_form("esvr config check") == "esvr config check"


@pytest.mark.slow
def test_every_readme_command_runs(project_copy):
    (project_copy / ".venv").symlink_to(VENV_BIN.parent)  # what `make setup` leaves in a checkout
    cmds = readme_commands(README.read_text(encoding="utf-8"))
    failures = []
    for cmd in cmds:
        form = checking_form(cmd)
        if form is None:
            continue
        # A fresh login-less shell per command: only what the README says puts esvr/dvc on the PATH.
        script = f"source .venv/bin/activate && export ESVR_ROOT=$PWD PYTHONPATH=$PWD && {form}"
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()), "ESVR_MIRROR": str(paths.mirror_dir()),
               "DVC_NO_ANALYTICS": "1", "PREFECT_HOME": str(paths.ROOT / ".prefect")}
        r = subprocess.run(["bash", "-c", script], cwd=project_copy, env=env, capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            failures.append(f"{cmd!r} (ran {form!r}): exit {r.returncode}\n{(r.stdout + r.stderr)[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_a_renamed_command_fails(project_copy):
    """The check above can fail: a README line naming a command that does not exist is reported."""
    (project_copy / ".venv").symlink_to(VENV_BIN.parent)
    script = "source .venv/bin/activate && export ESVR_ROOT=$PWD PYTHONPATH=$PWD && esvr confgi check"
    r = subprocess.run(["bash", "-c", script], cwd=project_copy, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert r.returncode != 0
