"""Contract commands of the evaluation: `esvr evaluate dialogues|run` and `esvr report` (heavy imports inside)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

app = typer.Typer(help="Score dialogues (value metrics, intensity, optional judge) and run the evaluate stage.",
                  no_args_is_help=True, add_completion=False)
report_app = typer.Typer(add_completion=False)
log = logging.getLogger(__name__)


@app.command("dialogues")
def dialogues(
    input: Path = typer.Option(..., "--input", "-i",
                               help="JSONL, one dialogue per row: {id, turns: [{role, text, intensity}]} "
                               "(docs/CONTRACTS.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="JSON file: {dialogues: [...], means: {...}}."),
    judge: bool = typer.Option(False, "--judge", help="Also score with the LLM judge of params (evaluate.judge)."),
    value_detector: str = typer.Option(None, "--value-detector", help="Folder or models:/NAME@ALIAS "
                                       "(default: evaluate.value_detector of params)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file (project-relative)."),
) -> None:
    """Score real or simulated dialogues with the evaluation's metrics (this is how ESConv is scored too)."""
    from tasks.common import paths
    from tasks.common.config import load_params
    from tasks.common.io import write_json
    from tasks.evaluate.score import score_file

    cfg = load_params(paths.ROOT / params_file)
    try:
        result = score_file(input, cfg, value_detector or cfg.evaluate.value_detector, judge)
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    write_json(out, result)
    typer.echo(json.dumps(result["means"], sort_keys=True))


@app.command("run")
def run(
    out: Path = typer.Option(None, "--out", help="Output folder (default data/evaluation)."),
    persona_file: Path = typer.Option(None, help="Personas JSONL (default data/personas/eval.jsonl)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """Run the evaluate stage on its own (no DVC, no Prefect); resumable: re-run after a crash."""
    from flows.evaluate import run_stage

    out_dir = out.resolve() if out else None
    summary = run_stage(params_file, out_dir=out_dir, persona_file=persona_file.resolve() if persona_file else None,
                        metrics_file=(out_dir / "metrics.json") if out_dir else None)
    typer.echo(json.dumps({k: summary[k] for k in ("batch", "run_ids", "skipped")}, sort_keys=True))


@report_app.command("report")
def report(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.html (self-contained) and report.md."),
    batch: str = typer.Option(None, help="Evaluation batch (the evaluate stage's run id); default: the latest."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params"),
) -> None:
    """Rebuild the evaluation report (paper tables side by side, plots, run ids) from the MLflow store."""
    from tasks.common import paths
    from tasks.common.config import load_params
    from tasks.evaluate.report import build

    cfg = load_params(paths.ROOT / params_file)
    try:
        summary = build(out.resolve(), cfg.evaluate.experiment, cfg.tracking.experiment, cfg.report.transcripts,
                        batch)
    except LookupError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, sort_keys=True))
