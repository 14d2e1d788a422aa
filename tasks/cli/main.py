"""`esvr` command line (typer). Heavy libraries are imported inside commands so `esvr --help` stays fast."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

import typer

from tasks.cli.train import app as train_app  # light: heavy imports live inside its commands
from tasks.common import env, logs, paths

app = typer.Typer(help="esvr: the ES-VR pipeline (crawl → annotate → datasets → train → simulate → evaluate).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Validate, show and switch the params profile.", no_args_is_help=True)
data_app = typer.Typer(help="Public datasets: stage them from the mirror or their origins.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(importlib.import_module("tasks.cli.datasets").app, name="datasets")
app.add_typer(importlib.import_module("tasks.cli.crawl").app, name="crawl")
from tasks.cli.annotators import analyze_app, emotions_app, values_app  # noqa: E402  (annotator contract commands)

app.add_typer(values_app, name="values")
app.add_typer(emotions_app, name="emotions")
app.add_typer(analyze_app, name="analyze")
app.add_typer(importlib.import_module("tasks.cli.llm").app)  # serve, simulate, personas (LLM layer)
app.add_typer(train_app, name="train")
app.add_typer(importlib.import_module("tasks.cli.ops").gpu_app, name="gpu")
app.add_typer(importlib.import_module("tasks.cli.ops").mlflow_app, name="mlflow")
_chat_cli = importlib.import_module("tasks.cli.chat")
app.add_typer(_chat_cli.app)  # esvr chat
app.add_typer(_chat_cli.guard_app, name="guard")
app.add_typer(importlib.import_module("tasks.cli.review").app, name="review")
app.add_typer(importlib.import_module("tasks.cli.evaluate").app, name="evaluate")
app.add_typer(importlib.import_module("tasks.cli.evaluate").report_app)  # `esvr report`
app.add_typer(importlib.import_module("tasks.cli.supporter").app, name="supporter")

log = logging.getLogger("esvr")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    env.apply_defaults()  # before any command imports prefect, mlflow, dvc or transformers
    logs.configure(verbose)
    from dotenv import load_dotenv  # secrets (Reddit, OpenAI, pseudonymisation key) live in env or .env only

    load_dotenv(paths.ROOT / ".env", override=False)


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _check_params(params_file: Path) -> None:
    from tasks.common.config import ConfigError, load_params

    try:
        load_params(params_file)
    except ConfigError as e:
        _fail(str(e))


# ------------------------------------------------------------------------------------------------------ stages
@app.command()
def stage(
    name: str = typer.Argument(..., help="A stage of dvc.yaml (this is what its `cmd` calls)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file, relative to the project root."),
) -> None:
    """Run one stage's Prefect flow."""
    from flows import flow_ref
    from tasks.common.orchestration import stage_names

    stages = stage_names()
    if name not in stages:
        _fail(f"unknown stage {name!r}; stages of dvc.yaml: {', '.join(stages)}")
    _check_params(paths.ROOT / params_file)  # fail in milliseconds, before Prefect starts its server
    module, fn = flow_ref(name)
    flow_fn = getattr(importlib.import_module(module), fn)
    result = flow_fn(params_file=str(params_file))
    log.info("stage %s done: %s", name, result)


@app.command()
def pipeline(
    target: list[str] = typer.Option(None, "--target", "-t", help="Only these stages and what they depend on."),
    force: bool = typer.Option(False, help="Re-run stages even when DVC finds them up to date."),
) -> None:
    """Run the whole DAG of dvc.yaml as one Prefect flow (DVC decides what is stale)."""
    _check_params(paths.PARAMS_FILE)
    from flows.pipeline import pipeline_flow

    results = pipeline_flow(targets=target or None, force=force)
    for k, v in results.items():
        typer.echo(f"{k:>20}: {v}")


# ------------------------------------------------------------------------------------------------------ config
@config_app.command("check")
def config_check(
    params_file: Path = typer.Argument(None, help="Default: the project's params.yaml."),
    trl: bool = typer.Option(True, "--trl/--no-trl", help="Also type-check TRL settings against TRL (a few seconds)."),
) -> None:
    """Validate a params file (unknown keys and wrong types are errors naming file, line and key)."""
    from tasks.common.config import ConfigError, load_params, params_sources, trl_type_errors

    p = params_file or paths.PARAMS_FILE
    try:
        params = load_params(p)
    except ConfigError as e:
        _fail(str(e))
    problems = trl_type_errors(params, params_sources(p)) if trl else []
    if problems:
        _fail(f"invalid params in {p} (TRL types):\n  " + "\n  ".join(problems))
    typer.echo(f"{p}: ok (profile {params.profile})")


@config_app.command("show")
def config_show(params_file: Path = typer.Argument(None)) -> None:
    """Print the validated params with defaults filled in, as JSON."""
    from tasks.common.config import load_params

    typer.echo(json.dumps(load_params(params_file).model_dump(), indent=2))


@config_app.command("use")
def config_use(profile: str = typer.Argument(..., help="tiny | paper")) -> None:
    """Make a shipped profile the active params.yaml (then `dvc repro` reproduces it)."""
    from tasks.common.config import ConfigError, shipped_profiles, use_profile

    if profile not in shipped_profiles():
        _fail(f"unknown profile {profile!r}; shipped: {', '.join(shipped_profiles())}")
    try:
        target = use_profile(profile)
    except ConfigError as e:
        _fail(str(e))
    typer.echo(f"{target} now holds profile {profile}; run `dvc repro` (or `esvr pipeline`)")


# ------------------------------------------------------------------------------------------------------ data
@data_app.command("fetch")
def data_fetch(
    dataset: list[str] = typer.Option(None, "--dataset", "-d", help="Default: the datasets params.yaml names."),
    from_origin: bool = typer.Option(False, "--from-origin", help="Download from the public origin when the mirror lacks a file."),
    mirror: Path = typer.Option(None, help=f"Mirror folder (default ${paths.MIRROR_ENV} or ../shared/data)."),
) -> None:
    """Stage public datasets into data/external/ with checksum verification (the `sources` stage without DVC)."""
    from tasks import sources
    from tasks.common.config import load_params

    names = dataset or load_params().sources.datasets
    try:
        report = sources.run(names, mirror=mirror.resolve() if mirror else None, allow_download=from_origin)
    except sources.SourceError as e:
        _fail(str(e))
    typer.echo(json.dumps(report))


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
