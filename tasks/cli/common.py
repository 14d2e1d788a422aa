"""Helpers the command modules share: a clean error exit and the validated params (imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from tasks.common.config import Params


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print `error: msg` on stderr and exit (no traceback: the message says what to fix)."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def load(params_file: Path) -> Params:
    """The params file (relative to the project root, or absolute), validated; a bad one exits with its message."""
    from tasks.common import paths
    from tasks.common.config import ConfigError, load_params

    try:
        return load_params(paths.ROOT / params_file)
    except ConfigError as e:
        fail(str(e))
