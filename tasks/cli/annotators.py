"""Contract commands of the annotators: `esvr values eval|predict`, `esvr emotions eval|predict`, `esvr analyze esconv`.

Each prints one JSON object on stdout (logs go to stderr). `--model` takes a folder or an MLflow URI
(`models:/value-detector@champion`). Heavy imports stay inside the commands so `esvr --help` is fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tasks.common import paths

values_app = typer.Typer(help="Value detector (Touché23 categories): evaluate and predict.", no_args_is_help=True)
emotions_app = typer.Typer(help="Emotion model (GoEmotions): evaluate and predict.", no_args_is_help=True)
analyze_app = typer.Typer(help="Analyses of public data with the annotators.", no_args_is_help=True)

VALUE_MODEL = str(paths.VALUE_DETECTOR.relative_to(paths.ROOT))
EMOTION_MODEL = str(paths.EMOTION.relative_to(paths.ROOT))


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _load(uri: str):
    from tasks.annotators.classifier import load_annotator

    try:
        return load_annotator(uri)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
        raise  # unreachable; keeps type checkers happy


def _emit(obj: dict) -> None:
    typer.echo(json.dumps(obj, sort_keys=False))


@values_app.command("eval")
def values_eval(
    arguments: Path = typer.Option(..., "--arguments", exists=True, dir_okay=False, help="Touché23 arguments-*.tsv"),
    labels: Path = typer.Option(..., "--labels", exists=True, dir_okay=False, help="Touché23 labels-*.tsv (level 2)"),
    model: str = typer.Option(VALUE_MODEL, "--model", help="Folder or MLflow URI (models:/value-detector@champion)."),
    batch_size: int = typer.Option(64, help="Rows per inference batch."),
) -> None:
    """Official Touché23 measure (F1 of macro precision and recall) at the model's own thresholds."""
    from tasks.annotators import classifier as annotators

    try:
        data = annotators.read_touche(arguments, labels)
    except ValueError as e:
        _fail(str(e))
    m, th, meta, _ = _load(model)
    probs = m.predict_proba(data.texts, batch_size=batch_size, max_tokens=8192)
    ev = annotators.evaluate(probs, data.labels, th, data.label_names)
    _emit({"f1": ev["f1"], "macro_precision": ev["macro_precision"], "macro_recall": ev["macro_recall"],
           "n": len(data.texts), "per_category": ev["per_category"]})


def _read_texts(path: Path) -> tuple[list[str], list[str]]:
    from tasks.common.io import read_jsonl

    ids, texts = [], []
    for i, r in enumerate(read_jsonl(path), 1):
        if not isinstance(r, dict) or not isinstance(r.get("text"), str):
            _fail(f"{path}:{i}: expected an object with a string `text` (and `id`)")
        ids.append(str(r.get("id", i)))
        texts.append(r["text"])
    return ids, texts


@values_app.command("predict")
def values_predict(
    input: Path = typer.Option(..., "--input", exists=True, dir_okay=False, help='JSONL of {"id", "text"}'),
    out: Path = typer.Option(..., "--out", help='JSONL of {"id", "values": [20 probs], "predicted": [categories]}'),
    model: str = typer.Option(VALUE_MODEL, "--model", help="Folder or MLflow URI."),
) -> None:
    """20 category probabilities per text (tasks.domain.taxonomy order) and the categories above their thresholds."""
    from tasks.common.io import write_jsonl

    ids, texts = _read_texts(input)
    m, th, _, _ = _load(model)
    probs = m.predict_proba(texts, batch_size=64, max_tokens=8192)
    n = write_jsonl(out, ({"id": i, "values": [round(float(x), 5) for x in p],
                           "predicted": [m.label_names[j] for j in range(len(p)) if p[j] >= th[j]]}
                          for i, p in zip(ids, probs, strict=True)))
    _emit({"written": n, "out": str(out), "labels": m.label_names})


@emotions_app.command("eval")
def emotions_eval(
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="GoEmotions TSV (text, label ids, id)"),
    model: str = typer.Option(EMOTION_MODEL, "--model", help="Folder or MLflow URI (models:/emotion-model@champion)."),
) -> None:
    """Macro-F1 over the 28 GoEmotions labels at the model's own thresholds."""
    from tasks.annotators import classifier as annotators

    m, th, _, _ = _load(model)
    try:
        d = annotators.read_goemotions(data, m.label_names)
    except ValueError as e:
        _fail(str(e))
    probs = m.predict_proba(d.texts, batch_size=128, max_tokens=8192)
    ev = annotators.evaluate(probs, d.labels, th, d.label_names)
    _emit({"macro_f1": ev["macro_f1"], "macro_precision": ev["macro_precision"], "macro_recall": ev["macro_recall"],
           "n": len(d.texts), "per_category": ev["per_category"]})


@emotions_app.command("predict")
def emotions_predict(
    input: Path = typer.Option(..., "--input", exists=True, dir_okay=False, help='JSONL of {"id", "text"}'),
    out: Path = typer.Option(..., "--out", help='JSONL of {"id", "emotions": [28], "positivity", "neg_intensity"}'),
    model: str = typer.Option(EMOTION_MODEL, "--model", help="Folder or MLflow URI."),
) -> None:
    """28 emotion probabilities, positivity and negative intensity per text."""
    from tasks.annotators import classifier as annotators
    from tasks.common.io import write_jsonl

    ids, texts = _read_texts(input)
    m, _, _, folder = _load(model)
    probs = m.predict_proba(texts, batch_size=128, max_tokens=8192)
    pos, neg = annotators.positivity_scores(probs, annotators.sentiment_groups(folder / "sentiment_dict.json", m.label_names))
    n = write_jsonl(out, ({"id": i, "emotions": [round(float(x), 5) for x in p], "positivity": float(a),
                           "neg_intensity": float(b)} for i, p, a, b in zip(ids, probs, pos, neg, strict=True)))
    _emit({"written": n, "out": str(out), "labels": m.label_names})


@analyze_app.command("esconv")
def analyze_esconv(
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Folder with ESConv train/valid/test.json"),
    model: str = typer.Option(None, "--model", help="Value detector folder or MLflow URI (default: params)."),
    last_turns: int = typer.Option(None, help="Seeker turns counted at the end of each conversation (default: params)."),
    test: str = typer.Option(None, help="mannwhitney | welch (default: params)."),
    threshold: float = typer.Option(None, help="One fixed value-presence cut (0 = the detector's own rule)."),
) -> None:
    """High-effect (intensity 5 -> 1-2) vs low-effect (5 -> 3-5) seekers: positive values in their last turns.
    Unset options take the `esconv_analysis` group of params.yaml."""
    from tasks import esconv_analysis as esconv
    from tasks.common.config import load_params

    base = load_params().esconv_analysis
    given = {"model": model, "last_turns": last_turns, "test": test, "presence_threshold": threshold}
    cfg = type(base).model_validate({**base.model_dump(), **{k: v for k, v in given.items() if v is not None}})
    try:
        res = esconv.run(data, cfg.model, cfg)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    _emit(res)
