"""Small stand-ins for the upstream stage outputs, built at test time in the exact docs/CONTRACTS.md formats.

Texts come from the public-data mirror (GoEmotions train.tsv) and are never committed. TVD labels are a fixed,
learnable function of each comment's GoEmotions labels, so a trained TVD can beat the majority prior.
"""

from __future__ import annotations

from pathlib import Path

from tasks.common.hashing import content_id
from tasks.common.io import write_jsonl
from tasks.domain.taxonomy import VALUE_CATEGORIES

SYSTEM_TVD = "Name the 3 values the seeker should be encouraged in next."
SYSTEM_RG = "Write a short supportive reply that reinforces these values: {values}."


def goemotions(mirror: Path, n: int) -> list[tuple[str, list[int]]]:
    """First n (text, emotion ids) rows of GoEmotions train.tsv."""
    rows = []
    with open(mirror / "goemotions" / "train.tsv", encoding="utf-8") as f:
        for line in f:
            text, labels, _ = line.rstrip("\n").split("\t")
            rows.append((text, [int(x) for x in labels.split(",")]))
            if len(rows) >= n:
                break
    return rows


def values_for(emotions: list[int]) -> list[str]:
    """3 distinct categories determined by the first emotion label (28 emotions -> 20 categories, learnable)."""
    e = emotions[0]
    idx = [e % 20, (e * 7 + 3) % 20, (e * 13 + 11) % 20]
    out: list[str] = []
    for i in idx:
        while VALUE_CATEGORIES[i] in out:
            i = (i + 1) % 20
        out.append(VALUE_CATEGORIES[i])
    return out


def write_threads(root: Path, rows: list[tuple[str, list[int]]], per_shard: int = 50) -> Path:
    """data/threads/shards/*.jsonl: one thread per 5 comments (contract: crawl → data/threads/)."""
    shards = root / "threads" / "shards"
    threads = []
    for i in range(0, len(rows), 5):
        chunk = rows[i:i + 5]
        utts = [{"id": content_id([i, j, t]), "reddit_id": f"t1_{i}_{j}", "parent_id": None if j == 0 else f"t1_{i}_0",
                 "author": f"u{j}", "role": "op" if j == 0 else "commenter", "text": t, "created_utc": None, "depth": min(j, 1)}
                for j, (t, _) in enumerate(chunk)]
        threads.append({"thread_id": content_id(["t", i]), "subreddit": "offmychest", "submission_id": f"t3_{i}",
                        "created_utc": None, "title": "", "source": "table", "utterances": utts})
    for k in range(0, len(threads), per_shard):
        part = threads[k:k + per_shard]
        write_jsonl(shards / f"{content_id([t['thread_id'] for t in part])}.jsonl", part)
    return shards


def write_datasets(root: Path, rows: list[tuple[str, list[int]]]) -> Path:
    """data/datasets/{tvd,rg_sft,rg_pairs}/{train,validation,test}.jsonl (contract: datasets → data/datasets/)."""
    ds = root / "datasets"
    n = len(rows)
    cut = {"train": (0, int(n * 0.8)), "validation": (int(n * 0.8), int(n * 0.9)), "test": (int(n * 0.9), n)}
    for split, (a, b) in cut.items():
        tvd, sft, pairs = [], [], []
        for i in range(a, b):
            text, emos = rows[i]
            vals = values_for(emos)
            tid = content_id(["t", i])
            tvd.append({"id": content_id(["tvd", i]), "thread_id": tid, "messages": [
                {"role": "system", "content": SYSTEM_TVD}, {"role": "user", "content": text},
                {"role": "assistant", "content": "Values: " + "; ".join(vals)}]})
            reply = f"You care about {vals[0].lower()}, and that matters."
            sft.append({"id": content_id(["rg", i]), "thread_id": tid, "target_values": vals[:2], "messages": [
                {"role": "system", "content": SYSTEM_RG.format(values=", ".join(vals[:2]))},
                {"role": "user", "content": text}, {"role": "assistant", "content": reply}]})
            prompt = [{"role": "system", "content": SYSTEM_RG.format(values=", ".join(vals[:2]))},
                      {"role": "user", "content": text}]
            pairs.append({"id": content_id(["pair", i]), "thread_id": tid, "target_values": vals[:2], "prompt": prompt,
                          "chosen": [{"role": "assistant", "content": reply}],
                          "rejected": [{"role": "assistant", "content": rows[(i + 1) % n][0]}]})
        write_jsonl(ds / "tvd" / f"{split}.jsonl", tvd)
        write_jsonl(ds / "rg_sft" / f"{split}.jsonl", sft)
        write_jsonl(ds / "rg_pairs" / f"{split}.jsonl", pairs)
    return ds
