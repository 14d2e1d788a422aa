"""Stage `annotate`: 20 value probabilities, 28 emotion probabilities, positivity and negative intensity for every
utterance of the thread store (docs/CONTRACTS.md, crawl → annotate).

Pure core: `annotate_threads(threads, models, cfg)`. I/O shell: `run_shard()` reads one thread shard and writes
data/annotated/shards/<same name>.jsonl. `annotate_shard` is the Prefect task, cached across runs on the shard's
content hash + both models' content hashes + the annotate params + CACHE_VERSION, so new crawl shards are the only
ones annotated again. Inference: tokenise once, length-sorted batches capped by a token budget, dynamic padding,
`torch.inference_mode` (tasks/annotators/classifier.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.annotators import classifier as annotators
from tasks.common import paths, registry
from tasks.common.config import AnnotateParams, OrchestrationParams
from tasks.common.hashing import sha256_file, sha256_tree
from tasks.common.io import read_jsonl, write_jsonl
from tasks.common.orchestration import map_shards, shard_task

log = logging.getLogger(__name__)

#: Bump when the output record or the inference logic changes in a way the task source hash would not show.
CACHE_VERSION = f"annotate-v1/{annotators.FORMAT_VERSION}"
THREADS_DIR = paths.THREADS / "shards"
OUT_DIR = paths.ANNOTATED / "shards"


class AnnotateError(RuntimeError):
    """A shard with too many unusable utterances, or a model that does not fit the contract."""


@dataclass
class Models:
    """Both annotators loaded, with the emotion sentiment grouping."""

    values: annotators.MeanPoolClassifier
    emotions: annotators.MeanPoolClassifier
    groups: dict[str, list[int]]
    same_tokenizer: bool


def load_models(value_uri: str, emotion_uri: str) -> Models:
    """Load the value detector and the emotion model from folders or MLflow URIs (cached per process)."""
    v_folder = registry.resolve(value_uri)
    e_folder = registry.resolve(emotion_uri)
    return _load_models(str(v_folder), str(e_folder))


@functools.lru_cache(maxsize=2)
def _load_models(v_folder: str, e_folder: str) -> Models:
    from tasks.domain.taxonomy import VALUE_CATEGORIES

    vm, _, _ = annotators.MeanPoolClassifier.load(v_folder)
    em, _, _ = annotators.MeanPoolClassifier.load(e_folder)
    if tuple(vm.label_names) != VALUE_CATEGORIES:
        raise AnnotateError(f"{v_folder}: labels are not the 20 categories of tasks.domain.taxonomy.VALUE_CATEGORIES")
    sent = Path(e_folder) / "sentiment_dict.json"
    if not sent.is_file():
        raise AnnotateError(f"{e_folder}: no sentiment_dict.json (retrain with `dvc repro train_emotion`)")
    groups = annotators.sentiment_groups(sent, em.label_names)
    same = vm.tokenizer.get_vocab() == em.tokenizer.get_vocab()
    return Models(vm, em, groups, same)


def model_version(uri: str) -> str:
    """Content hash of a model folder: the cache key part that changes when a model is retrained."""
    return sha256_tree(registry.resolve(uri))[:16]


def annotate_texts(texts: list[str], models: Models, cfg: AnnotateParams) -> dict[str, np.ndarray]:
    """values (n x 20), emotions (n x 28), positivity and neg_intensity (n) for a list of texts."""
    ids_v = models.values.encode(texts, cfg.max_length)["input_ids"] if texts else []
    ids_e = ids_v if models.same_tokenizer else (models.emotions.encode(texts, cfg.max_length)["input_ids"] if texts else [])
    vals = models.values.predict_proba(texts, cfg.batch_size, cfg.max_tokens, token_ids=ids_v)
    emos = models.emotions.predict_proba(texts, cfg.batch_size, cfg.max_tokens, token_ids=ids_e)
    pos, neg = annotators.positivity_scores(emos, models.groups)
    return {"values": vals, "emotions": emos, "positivity": pos, "neg_intensity": neg}


def annotate_threads(threads: Iterable[dict[str, Any]], models: Models, cfg: AnnotateParams) -> tuple[list[dict[str, Any]], int]:
    """One output record per utterance that has text (CONTRACTS order), and the count of utterances skipped."""
    keys: list[tuple[str, str]] = []
    texts: list[str] = []
    bad = 0
    for t in threads:
        for u in t.get("utterances", []):
            text = u.get("text")
            if not isinstance(text, str) or not text.strip() or not u.get("id"):
                bad += 1
                continue
            keys.append((u["id"], t["thread_id"]))
            texts.append(text)
    out = annotate_texts(texts, models, cfg)
    recs = [
        {"id": uid, "thread_id": tid, "values": [round(float(x), 5) for x in out["values"][i]],
         "emotions": [round(float(x), 5) for x in out["emotions"][i]], "positivity": round(float(out["positivity"][i]), 5),
         "neg_intensity": round(float(out["neg_intensity"][i]), 5)}
        for i, (uid, tid) in enumerate(keys)
    ]
    return recs, bad


def run_shard(in_path: str | Path, out_path: str | Path, models: Models, cfg: AnnotateParams) -> dict[str, Any]:
    """Annotate one thread shard into `out_path` (atomic write); returns counters."""
    t0 = time.time()
    threads = list(read_jsonl(in_path))
    recs, bad = annotate_threads(threads, models, cfg)
    total = len(recs) + bad
    if total and bad / total > cfg.max_bad_fraction:
        raise AnnotateError(f"{in_path}: {bad}/{total} utterances lack text or id (> annotate.max_bad_fraction "
                            f"{cfg.max_bad_fraction}); fix the crawl output or raise the threshold")
    write_jsonl(out_path, recs)
    secs = time.time() - t0
    log.info("%s: %d utterances (%d skipped) in %.1fs", Path(in_path).name, len(recs), bad, secs)
    return {"shard": Path(in_path).name, "threads": len(threads), "utterances": len(recs), "skipped": bad,
            "seconds": secs}


@shard_task(name="annotate-shard", retries=0)
def annotate_shard(in_path: str, shard_hash: str, out_path: str, value_uri: str, emotion_uri: str,
                   model_versions: dict[str, str], cfg: AnnotateParams,
                   cache_version: str = CACHE_VERSION) -> dict[str, Any]:
    """Prefect task for one shard. Cache key: shard hash + model versions + params + cache_version (+ paths)."""
    from tasks.common.determinism import set_threads

    set_threads(cfg.num_threads)  # the same thread count in a Dask/Ray worker as in the stage: identical floats
    return run_shard(in_path, out_path, load_models(value_uri, emotion_uri), cfg)


def shard_inputs(threads_dir: Path | None = None, limit: int = 0) -> list[Path]:
    """The thread shards to annotate, sorted by name."""
    d = threads_dir or THREADS_DIR
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no thread shards; run the crawl stage first (`dvc repro crawl`)")
    shards = sorted(d.glob("*.jsonl"))
    return shards[:limit] if limit else shards


def annotate_all(cfg: AnnotateParams, threads_dir: Path | None = None, out_dir: Path | None = None,
                 runner: OrchestrationParams | None = None, cache_version: str = CACHE_VERSION) -> dict[str, Any]:
    """Annotate every shard through the cached per-shard task on `runner` (threads, Dask or Ray: the outputs are the
    same); drop outputs of shards that no longer exist."""
    out_dir = out_dir or OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = shard_inputs(threads_dir, cfg.limit_shards)
    versions = {"values": model_version(cfg.value_model), "emotions": model_version(cfg.emotion_model)}
    summary: dict[str, Any] = {"shards": len(shards), "cached": 0, "annotated": 0, "utterances": 0, "skipped": 0,
                               "seconds": 0.0}
    t0 = time.time()
    calls: list[dict[str, Any]] = [dict(in_path=str(s), shard_hash=sha256_file(s), out_path=str(out_dir / s.name),
                  value_uri=cfg.value_model,
                  emotion_uri=cfg.emotion_model, model_versions=versions, cfg=cfg,
                  cache_version=cache_version) for s in shards]
    states = map_shards(annotate_shard, calls, runner)
    for kwargs, state in zip(calls, states, strict=True):
        if state.name == "Cached" and not Path(kwargs["out_path"]).is_file():  # the cache remembers a deleted file
            state = annotate_shard.with_options(refresh_cache=True)(**kwargs, return_state=True)
        res = state.result()
        summary["cached" if state.name == "Cached" else "annotated"] += 1
        summary["utterances"] += res["utterances"]
        summary["skipped"] += res["skipped"]
        summary["seconds"] += 0.0 if state.name == "Cached" else res["seconds"]
    keep = {s.name for s in shards}
    for stale in out_dir.glob("*.jsonl"):
        if stale.name not in keep:
            stale.unlink()
    summary["wall_seconds"] = time.time() - t0
    summary["model_versions"] = versions
    return summary
