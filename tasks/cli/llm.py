"""Contract commands of the LLM layer: `esvr serve`, `esvr simulate`, `esvr personas` (heavy imports inside)."""
# ruff: noqa: B008 - typer declares options as argument defaults

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(add_completion=False)


@app.command()
def serve(
    model: list[str] = typer.Option(..., "--model", "-m", help="Model folder or MLflow URI (models:/NAME@ALIAS); "
                                    "NAME=PATH to serve several (the request's `model` picks one). Repeatable."),
    port: int = typer.Option(8000, "--port", "-p"),
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default: no auth on this server)."),
    threads: int = typer.Option(2, help="torch CPU threads."),
) -> None:
    """Serve trained models behind an OpenAI-compatible API (/v1/chat/completions honours response_format)."""
    from tasks.llm.serve import serve as _serve

    _serve(model, host=host, port=port, threads=threads)


@app.command()
def simulate(
    personas: int = typer.Option(None, "--personas", "-n", help="Simulate this many train personas (default: params)."),
    out: Path = typer.Option(None, "--out", help="Output folder for train/validation.jsonl (default data/simulated)."),
    persona_file: Path = typer.Option(None, help="Personas JSONL (default data/personas/train.jsonl)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file (relative to the project root)."),
) -> None:
    """Run the simulate stage on its own (no DVC, no Prefect); resumable: re-run after a crash."""
    from flows.simulate import run_stage

    out_dir = out.resolve() if out else None
    report = run_stage(params_file, personas=personas, out_dir=out_dir,
                       persona_file=persona_file.resolve() if persona_file else None,
                       metrics_file=(out_dir / "report.json") if out_dir else None)
    typer.echo(json.dumps(report, sort_keys=True))


@app.command()
def personas(
    out: Path = typer.Option(None, "--out", help="Output folder for train/eval.jsonl (default data/personas)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """Run the personas stage on its own (no DVC, no Prefect)."""
    from flows.personas import run_stage

    out_dir = out.resolve() if out else None
    report = run_stage(params_file, out_dir=out_dir, metrics_file=(out_dir / "report.json") if out_dir else None)
    typer.echo(json.dumps(report, sort_keys=True))
