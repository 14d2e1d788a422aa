"""Contract commands of the LLM layer: `esvr serve`, `esvr simulate`, `esvr personas` (heavy imports inside)."""
# ruff: noqa: B008 - typer declares options as argument defaults

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(add_completion=False)


@app.command()
def serve(
    model: list[str] = typer.Option(None, "--model", "-m", help="Model folder or MLflow URI (models:/NAME@ALIAS); "
                                    "NAME=PATH to serve several (the request's `model` picks one). Repeatable. "
                                    "Default: params' serving.base as `base` plus serving.adapters (the champions)."),
    engine: str = typer.Option(None, help="esvr (CPU, tasks/llm/serve.py) or vllm (GPU); default: serving.engine."),
    port: int = typer.Option(None, "--port", "-p", help="Default: serving.port."),
    host: str = typer.Option(None, help="Bind address (default serving.host, loopback: no auth on this server)."),
    threads: int = typer.Option(2, help="torch CPU threads (esvr engine)."),
    dry_run: bool = typer.Option(False, help="vllm: print the command and exit."),
    check: bool = typer.Option(True, help="vllm: fail unless a json_schema response_format request is obeyed."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file (relative to the project root)."),
) -> None:
    """Serve trained models behind an OpenAI-compatible API (/v1/chat/completions honours response_format)."""
    from tasks.common import paths
    from tasks.common.config import load_params

    serving = load_params(paths.ROOT / params_file).serving
    serving = serving.model_copy(update={k: v for k, v in {"port": port, "host": host}.items() if v is not None})
    if (engine or serving.engine) == "vllm":
        from tasks.llm import vllm

        if model:
            raise typer.BadParameter("--model is for the esvr engine; vllm serves serving.base + serving.adapters")
        try:
            code = vllm.serve(serving, dry_run=dry_run, check=check)
        except vllm.ServingError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(3) from None
        raise typer.Exit(code)
    from tasks.llm.serve import serve as _serve

    specs = list(model) if model else [f"base={serving.base}", *(f"{n}={u}" for n, u in sorted(serving.adapters.items()))]
    _serve(specs, host=serving.host, port=serving.port, threads=threads, skip_missing=not model)


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
