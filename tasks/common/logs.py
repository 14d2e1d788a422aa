"""Logging set-up for entry points (library modules only call `logging.getLogger(__name__)`)."""

from __future__ import annotations

import logging
import os


def configure(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("ESVR_LOG_LEVEL", "INFO").upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party chatter stays at WARNING unless asked for.
    for noisy in ("httpx", "httpx2", "urllib3", "filelock", "dvc", "mlflow", "alembic", "prefect", "asyncio", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
