"""`esvr review serve|invite|raters|results`: the pairwise review page and its results (docs/review.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tasks.cli.common import fail, load

if TYPE_CHECKING:
    from tasks.common.config import Params
    from tasks.review.db import ReviewDB

app = typer.Typer(help="Pairwise review page: two dialogues side by side, judged by invited raters.",
                  no_args_is_help=True, add_completion=False)


def _db(path: Path, params: Params) -> ReviewDB:
    from tasks.review.db import ReviewDB

    return ReviewDB(path, params.review.busy_timeout_ms)


@app.command()
def serve(
    pairs: Path = typer.Option(..., "--pairs", help="JSONL of {pair_id, a: {variant, turns}, b: {...}}."),
    db: Path = typer.Option(..., "--db", help="SQLite file for pairs, raters and verdicts (created if absent)."),
    port: int = typer.Option(None, "--port", "-p", help="Default: params review.port."),
    host: str = typer.Option(None, "--host", help="Bind address (default: params review.host, loopback)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """Serve the review page; load (new) pairs into the database first."""
    from tasks.chat.guard import Guard, GuardError
    from tasks.review.app import serve as _serve
    from tasks.review.db import ReviewDBError
    from tasks.review.pairs import PairsError, load_pairs

    params = load(params_file)
    try:
        store = _db(db, params)
        loaded = store.load_pairs(load_pairs(pairs))
        guard = Guard.load(params.guard)
    except (PairsError, ReviewDBError, GuardError) as e:
        fail(str(e))
    typer.echo(f"pairs from {pairs}: {json.dumps(loaded)}; invite raters with `esvr review invite --db {db}`",
               err=True)
    _serve(store, params.review, guard, host or params.review.host, port or params.review.port)


@app.command()
def invite(
    db: Path = typer.Option(..., "--db", help="The review database (as given to `esvr review serve`)."),
    name: str = typer.Option("rater", "--name", help="A label for this rater (kept in the database, not shown)."),
    base_url: str = typer.Option(None, "--base-url", help="Default: the address `serve` last bound, else "
                                 "http://<review.host>:<review.port>."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """Create a rater and print their link (it holds the token: send it to that rater only)."""
    params = load(params_file)
    store = _db(db, params)
    _, token = store.invite(name, params.review.token_bytes)
    base = base_url or store.get_meta("base_url") or f"http://{params.review.host}:{params.review.port}"
    typer.echo(f"{base.rstrip('/')}/?token={token}")


@app.command()
def raters(
    db: Path = typer.Option(..., "--db"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """List raters (id, label, verdicts) as JSON lines; tokens are not stored, so they cannot be shown."""
    for r in _db(db, load(params_file)).raters():
        typer.echo(json.dumps(r))


@app.command()
def results(
    db: Path = typer.Option(..., "--db"),
    out: Path = typer.Option(None, "--out", help="Also write the results JSON here."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log a run in params review.experiment."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """Win rates with bootstrap intervals and Krippendorff's alpha per criterion; printed and logged to MLflow."""
    from tasks.common.io import write_json
    from tasks.review.results import log_results, summarise

    params = load(params_file)
    cfg = params.review
    verdicts = _db(db, params).verdicts()
    if not verdicts:
        fail(f"{db}: no verdicts yet (raters vote at the page `esvr review serve` runs)")
    summary = summarise(verdicts, cfg.bootstrap_samples, cfg.ci_level, params.seed)
    if mlflow:
        summary["mlflow_run_id"] = log_results(summary, verdicts, cfg.experiment, params.profile,
                                               {"review": cfg.model_dump(), "seed": params.seed}, db.resolve())
    if out:
        write_json(out, summary)
    typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
