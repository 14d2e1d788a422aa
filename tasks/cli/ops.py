"""Operations commands: `esvr gpu plan` (expected GPU hours) and `esvr mlflow links` (runs-table links)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

gpu_app = typer.Typer(help="GPU budget of the active profile.", no_args_is_help=True)
mlflow_app = typer.Typer(help="Where to look in the MLflow UI.", no_args_is_help=True)


@gpu_app.command("plan")
def gpu_plan(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file (relative to the project root)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Expected GPU hours per stage for the active profile (measured throughput only; unmeasured stages say so)."""
    from tasks.common import paths
    from tasks.common.config import load_params
    from tasks.ops import gpu_plan as gp

    p = gp.plan(load_params(paths.ROOT / params_file))
    typer.echo(json.dumps(p, indent=2) if as_json else gp.table(p))


@mlflow_app.command("links")
def mlflow_links(server: str = typer.Option("http://127.0.0.1:5000", help="The MLflow UI's address.")) -> None:
    """Links that open each esvr experiment (data stages, one per model family) on its runs table."""
    from tasks.common import tracking
    from tasks.common.config import load_params

    for name, url in tracking.experiment_links(server, load_params().tracking.experiment).items():
        typer.echo(f"{name:<32} {url}")
