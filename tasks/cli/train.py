"""`esvr train …`: use the trained helpers by hand (heavy imports inside the commands)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tasks.common import paths

app = typer.Typer(help="Trained TVD / reference generator: generate, inspect the chat template.", no_args_is_help=True)


@app.command("generate")
def generate(
    prompt: str = typer.Argument(..., help="The user turn (e.g. a seeker's post)."),
    model: str = typer.Option("models:/reference-generator@champion", help="Model folder or models:/NAME@ALIAS."),
    system: str = typer.Option("", help="Optional system turn (e.g. the target values)."),
    max_new_tokens: int = typer.Option(64),
) -> None:
    """Greedy completion of one chat prompt with a trained helper (uses the model's chat_template.jinja)."""
    from tasks.common import registry
    from tasks.train.common import load_causal_lm
    from tasks.train.evaluation import generate as gen

    m, tok = load_causal_lm(registry.resolve(model, must_contain=("config.json",)))
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    out = gen(m, tok, [msgs], max_new_tokens, 1, getattr(m.config, "max_position_embeddings", 512))
    typer.echo(json.dumps({"model": model, "completion": out[0]}, ensure_ascii=False))


@app.command("template")
def template(tok_dir: Path = typer.Argument(paths.TOKENIZER, help="Tokenizer folder.")) -> None:
    """Print the chat template artifact every stage formats turns with."""
    from tasks.domain.chat_template import TEMPLATE_FILE

    path = tok_dir / TEMPLATE_FILE
    if not path.is_file():
        typer.echo(f"error: {path} missing; run `dvc repro base_model`", err=True)
        raise typer.Exit(2)
    typer.echo(path.read_text(encoding="utf-8"))
