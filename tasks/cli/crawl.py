"""`esvr crawl ...`: the crawl stage's contract commands (dump, table, live). Defaults come from params.yaml's
`crawl` group when it loads; flags override them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from tasks.common.config import CrawlParams

app = typer.Typer(help="Reddit ingestion: Pushshift dumps, thread tables, live praw -> pseudonymised thread store.",
                  no_args_is_help=True)
log = logging.getLogger(__name__)


def _settings(params: Path | None, **over: Any) -> tuple[CrawlParams, int]:
    """The crawl group of the params file (the tiny profile's when there is none) with CLI overrides, and the seed."""
    from tasks.common import paths
    from tasks.common.config import ConfigError, CrawlParams, load_params, load_profile

    p = params or paths.PARAMS_FILE
    try:
        full = load_params(p)
    except ConfigError as e:
        if params is not None:
            raise typer.BadParameter(str(e)) from None
        log.info("no usable params file (%s): crawl settings of the tiny profile", str(e).splitlines()[0])
        full = load_profile("tiny")
    g = full.crawl.model_dump()
    for k, v in over.items():
        if v is None:
            continue
        if k in ("subreddit_live", "max_submissions"):
            g["live"][k.removesuffix("_live")] = v
        else:
            g[k] = v
    from pydantic import ValidationError

    try:
        return CrawlParams.model_validate(g), full.seed  # the overrides obey the same schema
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise typer.BadParameter(problems) from None


def _go(fn: Any) -> None:
    from tasks.crawl.records import CrawlError

    try:
        stats = fn()
    except CrawlError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(stats, sort_keys=True))


ParamsOpt = typer.Option(None, "--params", help="Params file whose `crawl` group gives the defaults.")


@app.command("dump")
def dump(
    inputs: list[Path] = typer.Option(..., "--input", "-i", help="Pushshift .zst files (RC_/RS_ monthly or extracts)."),
    subreddit: str = typer.Option(..., help="Keep only this subreddit (case-insensitive)."),
    since: str = typer.Option(None, help="YYYY-MM-DD (UTC), inclusive."),
    until: str = typer.Option(None, help="YYYY-MM-DD (UTC), inclusive."),
    out: Path = typer.Option(..., help="Thread store folder (shards/ + stats.json)."),
    workers: int = typer.Option(None, help="Processes (default: params crawl.workers)."),
    max_malformed_fraction: float = typer.Option(None, help="Fail above this share of malformed lines per file."),
    prefilter: bool = typer.Option(None, "--prefilter/--no-prefilter", help="Parse only lines naming the subreddit."),
    params: Path = ParamsOpt,
    more: list[Path] = typer.Argument(None, hidden=True, help="Further input files (`--input A B C` form)."),
) -> None:
    """Read Pushshift dumps into the thread store; writes OUT/stats.json."""
    inputs = list(inputs) + list(more or [])
    from tasks.crawl import crawl, records

    g, seed = _settings(params, subreddit=subreddit, since=since, until=until, workers=workers,
                        max_malformed_fraction=max_malformed_fraction, prefilter=prefilter)

    def go() -> dict:
        pseudo = records.pseudonymiser_from_env(g.pseudonym_fallback, seed)
        return crawl.run(g, [], list(inputs), out, pseudo)

    _go(go)


@app.command("table")
def table(
    inputs: list[Path] = typer.Option(..., "--input", "-i", help="CSV thread tables: author, self ID, parent ID, text."),
    out: Path = typer.Option(..., help="Thread store folder (shards/ + stats.json)."),
    subreddit: str = typer.Option(None, help="Subreddit of the table's threads (default: params crawl.subreddit)."),
    params: Path = ParamsOpt,
    more: list[Path] = typer.Argument(None, hidden=True, help="Further input files (`--input A B C` form)."),
) -> None:
    """Import thread tables into the thread store; writes OUT/stats.json."""
    inputs = list(inputs) + list(more or [])
    from tasks.crawl import crawl, records

    g, seed = _settings(params, subreddit=subreddit)

    def go() -> dict:
        pseudo = records.pseudonymiser_from_env(g.pseudonym_fallback, seed)
        return crawl.run(g, list(inputs), [], out, pseudo)

    _go(go)


@app.command("live")
def live(
    subreddit: str = typer.Option(None, help="Subreddit to crawl (default: params crawl.live.subreddit)."),
    out: Path = typer.Option(..., help="Thread store folder (shards/ + stats.json)."),
    state: Path = typer.Option(None, help="Crawl state folder (default: params crawl.live.state_dir)."),
    max_submissions: int = typer.Option(None, help="Newest submissions to visit this run."),
    params: Path = ParamsOpt,
) -> None:
    """Crawl new submissions + comment trees with praw (credentials from env/.env), resumable; writes the store."""
    from tasks.common import paths
    from tasks.crawl import crawl, records, reddit_live

    g, seed = _settings(params, subreddit_live=subreddit, max_submissions=max_submissions)
    g = g.model_copy(update={"subreddit": g.live.subreddit})  # the store's threads are of the crawled subreddit
    state_dir = state or (paths.ROOT / g.live.state_dir)

    def go() -> dict:
        pseudo = records.pseudonymiser_from_env(g.pseudonym_fallback, seed)
        reddit_live.crawl(g.live, state_dir, pseudo, crawl.rules_from(g))
        return crawl.run(g, [], [], out, pseudo, live_dirs=[state_dir])

    _go(go)
