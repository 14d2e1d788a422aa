"""Annotation throughput: batched inference (tasks/annotators/classifier.py) vs a naive transformers pipeline, one text at a time.

Both sides run the same value detector (encoder + mean pooling + linear head) on the same real Reddit utterances
(GoEmotions train.tsv comments, read from the public-data mirror at run time). Reports texts/s, the speed-up, and
the achieved GFLOP/s of the batched path (useful FLOPs of real tokens, padding excluded) against the measured fp32
matmul rate of this CPU with the same thread count.

    python -m benchmarks.annotate [--n 2000] [--model models/value_detector] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np

from tasks.annotators import classifier as annotators
from tasks.common import env, paths

env.apply_defaults(offline=True)  # before prefect/mlflow/transformers are imported


def reddit_texts(n: int, seed: int = 0) -> list[str]:
    """`n` real Reddit comments from the mirror's GoEmotions train.tsv (seeded sample)."""
    src = paths.mirror_dir() / "goemotions" / "train.tsv"
    if not src.is_file():
        raise SystemExit(f"{src} not found: set {paths.MIRROR_ENV} to the public-data mirror")
    with open(src, encoding="utf-8", newline="") as f:
        texts = [r[0] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r and r[0].strip()]
    return random.Random(seed).sample(texts, n)


def matmul_gflops(threads: int, size: int = 1024, reps: int = 10) -> float:
    """Best-of fp32 GEMM rate (GFLOP/s) of this CPU: the practical ceiling for transformer inference."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def encoder_flops(lengths: list[int], cfg) -> float:
    """Useful forward FLOPs of a BERT encoder over sequences of the given (unpadded) lengths."""
    d, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    total = 0.0
    for n in lengths:
        linear = 2 * n * (4 * d * d + 2 * d * ff)  # QKV + output projection, FFN up + down
        attn = 2 * 2 * n * n * d  # scores QK^T and the weighted sum of V
        total += layers * (linear + attn)
    return total


def naive(model_dir: Path, texts: list[str], head_w: np.ndarray, head_b: np.ndarray, max_length: int) -> float:
    """transformers pipeline('feature-extraction') one text at a time, then mean pooling + head: texts/s."""
    from transformers import pipeline

    pipe = pipeline("feature-extraction", model=str(model_dir), tokenizer=str(model_dir), device="cpu",
                    tokenize_kwargs={"truncation": True, "max_length": max_length})
    pipe(texts[0])
    t = time.perf_counter()
    for x in texts:
        h = np.asarray(pipe(x)[0], dtype=np.float32)  # (tokens, hidden); no padding with one text
        logits = h.mean(0) @ head_w.T + head_b
        _ = 1 / (1 + np.exp(-logits))
    return len(texts) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--model", default="models/value_detector")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--naive-n", type=int, default=0, help="texts for the naive side (default: all n)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    texts = reddit_texts(args.n)
    model, _, meta, folder = annotators.load_annotator(args.model)
    w = model.head.weight.detach().numpy()
    b = model.head.bias.detach().numpy()
    ml = model.max_length

    peak = matmul_gflops(args.threads)
    model.predict_proba(texts[:64], batch_size=args.batch_size)  # warm-up
    t = time.perf_counter()
    ids = model.encode(texts)["input_ids"]
    probs = model.predict_proba(texts, batch_size=args.batch_size, max_tokens=args.max_tokens, token_ids=ids)
    fast_s = time.perf_counter() - t
    lengths = [len(x) for x in ids]
    flops = encoder_flops(lengths, model.encoder.config)
    naive_texts = texts[: args.naive_n or args.n]
    naive_tps = naive(folder, naive_texts, w, b, ml)
    # correctness: the naive path must give the same probabilities as the batched one
    from transformers import pipeline

    pipe = pipeline("feature-extraction", model=str(folder), tokenizer=str(folder), device="cpu",
                    tokenize_kwargs={"truncation": True, "max_length": ml})
    check = [1 / (1 + np.exp(-(np.asarray(pipe(x)[0], dtype=np.float32).mean(0) @ w.T + b))) for x in texts[:20]]
    max_diff = float(np.abs(np.vstack(check) - probs[:20]).max())
    fast_tps = len(texts) / fast_s
    out = {
        "texts": len(texts), "naive_texts": len(naive_texts), "threads": args.threads, "model": str(folder),
        "mean_tokens": float(np.mean(lengths)), "batch_size": args.batch_size, "max_tokens": args.max_tokens,
        "naive_texts_per_s": round(naive_tps, 1), "batched_texts_per_s": round(fast_tps, 1),
        "speedup": round(fast_tps / naive_tps, 2),
        "batched_gflops": round(flops / fast_s / 1e9, 1), "matmul_peak_gflops": round(peak, 1),
        "fraction_of_matmul_peak": round(flops / fast_s / 1e9 / peak, 3),
        "max_abs_prob_diff_vs_naive": max_diff,
        "targets": {"speedup": 3.0, "fraction_of_matmul_peak": 0.4},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
