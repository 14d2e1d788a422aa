"""Annotator training on small subsets of the real data: the model learns something, saves, reloads, registers in
MLflow and answers the contract CLI. (Full-size quality is measured by the training stages, not here.)"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from tasks.annotators import classifier as A
from tasks.common import registry
from tasks.domain.taxonomy import VALUE_CATEGORIES

pytestmark = pytest.mark.mirror


def _cfg(**kw):
    base = dict(base_model="minilm", max_length=64, batch_size=8, epochs=1, max_steps=4, lr_encoder=5.0e-4,
                lr_head=5.0e-3, weight_decay=0.0, warmup_ratio=0.0, freeze_embeddings=True, freeze_layers=0,
                threshold_mode="global", limit_train=0, limit_dev=0, num_threads=2, log_every=1)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture(scope="module")
def touche(mirror):
    d = mirror / "touche23-valueeval"
    tr = A.subset(A.read_touche(d / "arguments-training.tsv", d / "labels-training.tsv"), 32, 1)
    dv = A.subset(A.read_touche(d / "arguments-validation.tsv", d / "labels-validation.tsv"), 24, 2)
    return tr, dv


@pytest.fixture(scope="module")
def trained(touche, tmp_path_factory):
    """A value detector trained for 4 steps at a high learning rate, saved to a temp folder."""
    tr, dv = touche
    before = A.MeanPoolClassifier.from_base("minilm", tr.label_names, 64, tr.labels.mean(0))
    w0 = {k: v.clone() for k, v in before.encoder.state_dict().items()}
    h0 = before.head.weight.detach().clone()
    losses = []
    res = A.train_classifier(tr, dv, _cfg(), 7, "touche_f1", on_metrics=lambda m, s: losses.append(m),
                             base_model=before)
    folder = tmp_path_factory.mktemp("vd") / "model"
    res.model.save(folder, res.thresholds, extra={"task": "value_detector"})
    return res, w0, h0, losses, folder


def test_training_changes_weights_and_keeps_loss_finite(trained):
    res, w0, h0, losses, _ = trained
    assert res.steps == 4
    train_losses = [m["train_loss"] for m in losses if "train_loss" in m]
    assert train_losses and all(np.isfinite(train_losses))
    sd = res.model.encoder.state_dict()
    changed = [k for k in w0 if "embeddings" not in k and not np.allclose(sd[k].numpy(), w0[k].numpy())]
    assert changed, "no encoder weight moved"
    assert all(np.allclose(sd[k].numpy(), w0[k].numpy()) for k in w0 if "embeddings" in k), "frozen embeddings moved"
    assert not np.allclose(res.model.head.weight.detach().numpy(), h0.numpy())
    assert {"dev_f1", "dev_loss", "dev_macro_precision"} <= set(res.history[0])


def test_saved_folder_reloads_with_identical_predictions(trained, touche):
    res, *_, folder = trained
    th = json.loads((folder / "thresholds.json").read_text())
    assert th["labels"] == list(VALUE_CATEGORIES) and len(th["thresholds"]) == 20
    assert all(0 < t < 1 for t in th["thresholds"])
    model, thr, meta = A.MeanPoolClassifier.load(folder)
    texts = touche[1].texts[:5]
    assert np.allclose(model.predict_proba(texts), res.model.predict_proba(texts), atol=1e-5)
    # batching must not change results: one text at a time equals the length-sorted padded batch
    one = np.vstack([model.predict_proba([t]) for t in texts])
    assert np.allclose(one, model.predict_proba(texts, batch_size=4), atol=1e-4)
    assert meta["pooling"] == "mean" and thr.shape == (20,)


def test_register_and_load_by_alias(trained, mlflow_store):
    import mlflow

    *_, folder = trained
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
        version = registry.register_logged(f"{run.info.artifact_uri}/model", "value-detector-test", run.info.run_id,
                                          ["champion"])
    assert version == "1"
    model, th, meta, local = A.load_annotator("models:/value-detector-test@champion")
    assert (local / "thresholds.json").is_file() and model.label_names == list(VALUE_CATEGORIES)


def _write_touche_subset(data, tmp_path):
    args, labels = tmp_path / "arguments.tsv", tmp_path / "labels.tsv"
    with open(args, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writerow(["Argument ID", "Conclusion", "Stance", "Premise"])
        for i, t in zip(data.ids, data.texts, strict=True):
            w.writerow([i, "c", "in favor of", t.replace("\t", " ")])
    with open(labels, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["Argument ID", *VALUE_CATEGORIES])
        for i, y in zip(data.ids, data.labels, strict=True):
            w.writerow([i, *[int(v) for v in y]])
    return args, labels


def test_values_eval_and_predict_cli(trained, touche, tmp_path):
    from typer.testing import CliRunner

    from tasks.cli.main import app

    *_, folder = trained
    args, labels = _write_touche_subset(touche[1], tmp_path)
    r = CliRunner().invoke(app, ["values", "eval", "--arguments", str(args), "--labels", str(labels), "--model", str(folder)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"f1", "macro_precision", "macro_recall", "per_category"} <= set(out)
    assert set(out["per_category"]) == set(VALUE_CATEGORIES) and 0 <= out["f1"] <= 1
    inp = tmp_path / "texts.jsonl"
    inp.write_text("\n".join(json.dumps({"id": str(i), "text": t}) for i, t in enumerate(touche[1].texts[:3])))
    r = CliRunner().invoke(app, ["values", "predict", "--input", str(inp), "--out", str(tmp_path / "p.jsonl"), "--model", str(folder)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["id"] for x in rows] == ["0", "1", "2"] and all(len(x["values"]) == 20 for x in rows)
    assert all(set(x["predicted"]) <= set(VALUE_CATEGORIES) for x in rows)


def test_values_eval_cli_names_a_missing_model(tmp_path, touche):
    from typer.testing import CliRunner

    from tasks.cli.main import app

    args, labels = _write_touche_subset(touche[1], tmp_path)
    r = CliRunner().invoke(app, ["values", "eval", "--arguments", str(args), "--labels", str(labels), "--model", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no model folder" in r.output


def test_emotion_model_trains_and_cli_reports_macro_f1(mirror, tmp_path):
    from typer.testing import CliRunner

    from tasks.cli.main import app

    d = mirror / "goemotions"
    names = A.read_emotion_names(d / "emotions.txt")
    tr = A.subset(A.read_goemotions(d / "train.tsv", names), 48, 1)
    dv = A.subset(A.read_goemotions(d / "dev.tsv", names), 32, 2)
    res = A.train_classifier(tr, dv, _cfg(threshold_mode="per_category", max_steps=3), 3, "macro_f1")
    folder = tmp_path / "emo"
    res.model.save(folder, res.thresholds)
    (folder / "sentiment_dict.json").write_text((d / "sentiment_dict.json").read_text())
    sub = tmp_path / "dev.tsv"
    with open(d / "dev.tsv", encoding="utf-8") as f:
        sub.write_text("".join(f.readline() for _ in range(20)), encoding="utf-8")
    r = CliRunner().invoke(app, ["emotions", "eval", "--data", str(sub), "--model", str(folder)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0.0 <= out["macro_f1"] <= 1.0 and out["n"] == 20 and len(out["per_category"]) == 28
