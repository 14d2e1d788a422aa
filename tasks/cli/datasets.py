"""`esvr datasets …`: build the datasets without Prefect/MLflow, check their data contracts, show their stats."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="TVD / RG SFT / RG pair datasets (data/datasets): build, check contracts, show stats.",
                  no_args_is_help=True)


@app.command("build")
def build(params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    """Build data/datasets from data/threads + data/annotated (the stage's core, no Prefect or MLflow)."""
    from tasks import datasets
    from tasks.common import paths
    from tasks.common.config import load_params

    p = load_params(paths.ROOT / params_file)
    try:
        report = datasets.run(p.datasets, p.seed)
    except datasets.DatasetsError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({n: report[n]["size"] for n in datasets.DATASETS}))


@app.command("check")
def check(out_dir: Path = typer.Option(None, help="Default: data/datasets."),
          threads_dir: Path = typer.Option(None, help="Default: data/threads (every thread_id must be there).")) -> None:
    """Check the data contracts (no thread in two splits, valid TVD labels, chosen != rejected, ...); exit 1 on breach."""
    from tasks import datasets
    from tasks.common import paths
    from tasks.common.io import read_jsonl

    out_dir = out_dir or datasets.OUT_DIR
    if not out_dir.is_dir():
        typer.echo(f"error: {out_dir} not found; run `dvc repro datasets` first", err=True)
        raise typer.Exit(2)
    tdir = threads_dir or datasets.THREADS_DIR
    known = {t["thread_id"] for f in sorted((tdir / "shards").glob("*.jsonl")) for t in read_jsonl(f)} or None
    data = datasets.load_datasets(out_dir)
    bad = datasets.contract_violations(data, known)
    for b in bad:
        typer.echo(b)
    n = sum(len(r) for s in data.values() for r in s.values())
    typer.echo(f"{n} records in {out_dir.relative_to(paths.ROOT) if out_dir.is_relative_to(paths.ROOT) else out_dir}: "
               f"{'OK' if not bad else f'{len(bad)} violations'}" + ("" if known else " (no thread store: ids unchecked)"))
    raise typer.Exit(1 if bad else 0)


@app.command("stats")
def stats() -> None:
    """Print data/datasets/stats.json."""
    from tasks import datasets

    f = datasets.OUT_DIR / "stats.json"
    if not f.is_file():
        typer.echo(f"error: {f} not found; run `dvc repro datasets` first", err=True)
        raise typer.Exit(2)
    typer.echo(f.read_text(encoding="utf-8"))
