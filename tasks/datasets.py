"""Stage `datasets`: the TVD, RG SFT and RG preference-pair datasets from annotated r/offmychest threads.

The paper's data idea: values that the OP expresses in a *positive* follow-up reply are successful target values,
and the commenter reply just before it is an effective support utterance.

* Dialogue path: o1 (post), c1, o2, c2, …, o_t, c_t, o_{t+1} along the comment tree, alternating the OP (seeker) and
  ONE commenter (supporter). Every OP reply whose ancestor chain is such a path gives one candidate example (in a
  tree each node has one chain, so examples never repeat).
* Positive: o_{t+1}'s emotion positivity passes `positivity_rule` (threshold and/or increase over o_t; params).
* Target values: the categories *present* in o_{t+1} by the value detector's presence rule
  (tasks/annotators/presence.py, the detector's presence.json), ranked by lift — probability over the category's
  base rate (its mean probability over every annotated utterance of the corpus) — at most 3. Lift, because raw
  probability ranks the categories the detector gives every text (Security: personal, Self-direction: action,
  Benevolence: caring) first whatever the text says; lift ranks what this reply says more than a typical one.
  A positive reply with no value present gives no example (counted as `no_value_present` in every dataset's drops).
* TVD: history o1..o_t → those target values (`Values: A; B; C`, 1 to 3 names).
* RG SFT: history o1..o_t + those target values → c_t.
* RG pairs: chosen = c_t; rejected = other commenter comments in the same thread whose present values (the same
  rule) share none with the target values.
* Splits by thread (seeded, balanced on example counts), de-duplication on (prompt, answer), length filters in
  tokens of the tokenizer that trains on the data (a documented estimate when it is absent).

Pure core: `clean_text`, `is_positive`, `target_values`, `extract_thread`, `assign_splits`, `assemble`.
I/O: `read_shards`, `make_token_counter`, `run`, `write_cards`. Prefect wrappers at the bottom; flow in flows/datasets.py.
"""

from __future__ import annotations

import html
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.annotators.presence import PresenceRule
from tasks.common import paths
from tasks.common.config import DatasetsParams
from tasks.common.hashing import content_id, sha256_tree
from tasks.common.io import atomic_open, read_jsonl, write_json, write_jsonl
from tasks.domain import prompts
from tasks.domain.taxonomy import N_VALUES, VALUE_CATEGORIES

log = logging.getLogger(__name__)

#: Bump when extraction or formatting logic changes in a way the task source hash would not show.
CACHE_VERSION = "datasets-v2"  # v2: target values by the presence rule, ranked by lift
DATASETS = ("tvd", "rg_sft", "rg_pairs")
#: Spare rejected candidates kept per example (x max_rejected_per_example) for the length filter to choose from.
REJECTED_POOL_FACTOR = 4
THREADS_DIR = paths.THREADS
ANNOTATED_DIR = paths.ANNOTATED
OUT_DIR = paths.DATASETS

TokenCounter = Callable[[list[dict[str, str]], bool], int]


class DatasetsError(RuntimeError):
    """Inputs missing or too many bad records; the message says how to fix it."""


# ------------------------------------------------------------------------------------------------------ text
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_REMOVED = {"[deleted]", "[removed]", "[ removed by reddit ]"}


def clean_text(text: str | None) -> str:
    """Reddit body → plain text: HTML entities decoded, zero-width spaces gone, at most one blank line in a row."""
    if not text:
        return ""
    t = html.unescape(text)
    t = _ZERO_WIDTH.sub("", t).replace("\r\n", "\n").replace("\r", "\n")
    t = "\n".join(line.rstrip() for line in t.split("\n"))
    t = re.sub(r"\n{3,}", "\n\n", t).strip()
    return "" if t.lower() in _REMOVED else t


def trim_turn(text: str, max_chars: int) -> str:
    """Cut a long history turn at a word boundary before max_chars and mark the cut (0 = keep whole)."""
    if not max_chars or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip() + " …"


def _norm(text: str) -> str:
    """Key for duplicate detection: case- and whitespace-insensitive."""
    return re.sub(r"\s+", " ", text.lower()).strip()


# ------------------------------------------------------------------------------------------------------ rules
def is_positive(p: float, p_prev: float | None, cfg: DatasetsParams) -> bool:
    """The positivity rule for an OP reply (see DatasetsParams.positivity_rule); p_prev is o_t's positivity."""
    above = p >= cfg.positivity_threshold
    rose = p_prev is not None and (p - p_prev) >= cfg.positivity_min_increase
    return {"threshold": above, "increase": rose, "either": above or rose, "both": above and rose}[cfg.positivity_rule]


def target_values(text: str, probs: Sequence[float], rule: PresenceRule, base_rates: Sequence[float],
                  k: int = prompts.TVD_K) -> list[str]:
    """The categories present in `text` (the presence rule), highest lift p / base rate first (ties: taxonomy
    order), at most k; [] when none is present."""
    mask = rule.present([text], np.asarray([probs], dtype=np.float64))[0]
    lift = [p / max(b, 1e-6) for p, b in zip(probs, base_rates, strict=True)]
    order = sorted((i for i in range(N_VALUES) if mask[i]), key=lambda i: (-lift[i], i))
    return [VALUE_CATEGORIES[i] for i in order[:k]]


def present_values(text: str, probs: Sequence[float], rule: PresenceRule) -> list[str]:
    """The categories present in `text` by the presence rule, in taxonomy order."""
    return rule.values([text], np.asarray([probs], dtype=np.float64))[0]


def base_rates(annotated_paths: Iterable[Path]) -> list[float]:
    """Mean probability of each category over every usable annotation of the corpus (the lift denominator)."""
    total = [0.0] * N_VALUES
    n = 0
    for path in annotated_paths:
        for r in read_jsonl(path):
            if _annotation_ok(r):
                total = [t + float(x) for t, x in zip(total, r["values"], strict=True)]
                n += 1
    if not n:
        raise DatasetsError("no usable annotation in data/annotated: run the annotate stage (`dvc repro annotate`)")
    return [t / n for t in total]


def positivity_threshold(cfg: DatasetsParams, positivities: Sequence[float]) -> float:
    """The absolute threshold of the positivity rule: fixed, or the `positivity_quantile` of the candidates' scores
    (robust to an emotion model whose scores are shifted, e.g. one trained for minutes on CPU)."""
    if not cfg.positivity_quantile or not positivities:
        return float(cfg.positivity_threshold)
    xs = sorted(positivities)
    pos = cfg.positivity_quantile * (len(xs) - 1)  # linear interpolation, as numpy's default quantile
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def load_rule(cfg: DatasetsParams) -> PresenceRule:
    """The presence rule shipped with the value detector (`datasets.value_detector`: its presence.json)."""
    folder = paths.ROOT / cfg.value_detector
    try:
        return PresenceRule.from_folder(folder)
    except (FileNotFoundError, ValueError) as e:
        raise DatasetsError(f"datasets.value_detector: {e}; run `dvc repro train_value_detector`") from None


def _annotation_ok(a: dict[str, Any] | None) -> bool:
    if a is None:
        return False
    v, p = a.get("values"), a.get("positivity")
    return (isinstance(v, list) and len(v) == N_VALUES and all(isinstance(x, (int, float)) for x in v)
            and isinstance(p, (int, float)) and 0.0 <= p <= 1.0)


# ------------------------------------------------------------------------------------------------------ extraction
@dataclass
class ThreadResult:
    """Candidate examples of one thread plus the counters that explain what was skipped."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)


def extract_thread(thread: dict[str, Any], ann: dict[str, dict[str, Any]], cfg: DatasetsParams, seed: int,
                   rule: PresenceRule, rates: Sequence[float]) -> ThreadResult:
    """Every candidate OP reply on a valid o/c path of one thread → one example dict (history, reply, targets,
    rejected); `target_values` is [] when no value is present (assemble() drops those after the positivity rule).

    `ann` maps utterance id → annotation record; `rule` is the presence rule, `rates` the corpus base rates.
    Rejected comments are sampled (seeded per example) from the thread's other commenter comments that share no
    present value with the target values.
    """
    res = ThreadResult()
    c = res.counters
    utts = thread["utterances"]
    # parent_id names the parent's Reddit fullname (t3_/t1_); accept the content-hash id too.
    by_reddit = {**{u["id"]: u for u in utts}, **{u["reddit_id"]: u for u in utts if u.get("reddit_id")}}
    texts = {u["id"]: clean_text(u.get("text")) for u in utts}
    c["utterances"] += len(utts)
    root = next((u for u in utts if u.get("parent_id") is None), None)
    if root is None or root.get("role") != "op":
        c["threads_without_post"] += 1
        return res
    c["threads"] += 1
    bad_ann = {u["id"] for u in utts if not _annotation_ok(ann.get(u["id"]))}
    c["utterances_without_annotation"] += len(bad_ann)

    for u in utts:
        if u is root or u.get("role") != "op":
            continue
        c["op_replies"] += 1
        chain = [u]  # o_{t+1}, c_t, o_t, ..., o1 (walked upwards)
        ok = True
        while chain[-1].get("parent_id") is not None:
            parent = by_reddit.get(chain[-1]["parent_id"])
            if parent is None:
                ok = False
                c["op_replies_unreachable"] += 1
                break
            chain.append(parent)
        if not ok:
            continue
        chain.reverse()  # o1, c1, o2, ..., c_t, o_{t+1}
        roles = [x.get("role") for x in chain]
        commenters = {x.get("author") for x in chain[1::2]}
        if (len(chain) < 3 or any(r != ("op" if i % 2 == 0 else "commenter") for i, r in enumerate(roles))
                or len(commenters) != 1):
            c["op_replies_not_on_path"] += 1  # e.g. OP replying to itself, or two commenters in one chain
            continue
        c["op_replies_on_path"] += 1
        outcome, reply, prev_op = chain[-1], chain[-2], chain[-3]
        if any(not texts[x["id"]] or len(texts[x["id"]]) < cfg.min_chars for x in chain):
            c["skipped_empty_text"] += 1
            continue
        if outcome["id"] in bad_ann:
            c["skipped_missing_annotation"] += 1
            continue
        p = float(ann[outcome["id"]]["positivity"])
        p_prev = float(ann[prev_op["id"]]["positivity"]) if prev_op["id"] not in bad_ann else None
        # The positivity rule is applied in assemble(): a quantile threshold needs every candidate of the corpus.
        c["op_replies_candidates"] += 1
        c["history_turns_trimmed"] += sum(1 for x in chain[:-2] if cfg.max_turn_chars and len(texts[x["id"]]) > cfg.max_turn_chars)
        target = target_values(texts[outcome["id"]], ann[outcome["id"]]["values"], rule, rates)
        c["op_replies_without_value"] += not target
        history_nodes = chain[:-2]  # o1 .. o_t
        path_ids = {x["id"] for x in chain}
        chosen_key = _norm(texts[reply["id"]])
        candidates = []
        for o in utts:
            if not target:
                break  # no example will be made: no rejected comments needed
            if o.get("role") != "commenter" or o["id"] in path_ids or o["id"] in bad_ann:
                continue
            t = texts[o["id"]]
            if len(t) < cfg.min_chars or _norm(t) == chosen_key:
                continue
            vals = present_values(t, ann[o["id"]]["values"], rule)
            if set(vals) & set(target):
                continue
            candidates.append({"id": o["id"], "text": t, "values": vals})
        # Seed per example so the sample does not depend on which other threads are in the run.
        rng = random.Random(f"{seed}:{outcome['id']}")
        seen: set[str] = set()
        unique = []
        for x in sorted(candidates, key=lambda x: x["id"]):
            if _norm(x["text"]) not in seen:
                seen.add(_norm(x["text"]))
                unique.append(x)
        # Keep a seeded order of spare candidates: assemble() takes the first max_rejected_per_example that pass
        # the length filter, so one over-long comment does not cost the pair.
        rejected = rng.sample(unique, min(REJECTED_POOL_FACTOR * cfg.max_rejected_per_example, len(unique)))
        if not rejected:
            c["examples_without_rejected"] += 1
        res.examples.append({
            "thread_id": thread["thread_id"],
            "history": [("seeker" if x["role"] == "op" else "supporter", trim_turn(texts[x["id"]], cfg.max_turn_chars))
                        for x in history_nodes],
            "history_ids": [x["id"] for x in history_nodes],
            "reply_id": reply["id"],
            "reply": texts[reply["id"]],
            "outcome_id": outcome["id"],
            "positivity": p,
            "positivity_prev": p_prev,
            "target_values": target,
            "rejected": rejected,
        })
    return res


# ------------------------------------------------------------------------------------------------------ splits
def assign_splits(weights: dict[str, int], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Thread id → split, balancing example counts: threads go largest first (ties in a seeded shuffle) to the split
    whose fill ratio (examples / target) would be lowest after adding them, so one big thread cannot swamp a small
    split; the last threads are reserved for splits that are still empty."""
    threads = sorted(weights)
    random.Random(seed).shuffle(threads)
    threads.sort(key=lambda t: -weights[t])  # stable: the shuffle orders equal weights
    total = sum(weights.values()) or 1
    names = [s for s, f in fractions.items() if f > 0]
    filled = dict.fromkeys(names, 0)
    empty = set(names)
    out: dict[str, str] = {}
    for i, t in enumerate(threads):
        remaining = len(threads) - i
        pool = [s for s in names if s in empty] if remaining <= len(empty) else names
        best = min(pool, key=lambda s: ((filled[s] + weights[t]) / (fractions[s] * total), -fractions[s]))
        out[t] = best
        filled[best] += weights[t]
        empty.discard(best)
    return out


# ------------------------------------------------------------------------------------------------------ assembly
def format_records(ex: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The TVD, RG SFT and RG pair records of one example (ids are content hashes of what the model sees)."""
    base = {"thread_id": ex["thread_id"], "target_values": ex["target_values"], "history_ids": ex["history_ids"],
            "reply_id": ex["reply_id"], "outcome_id": ex["outcome_id"]}
    tvd_msgs = prompts.tvd_sft_messages(ex["history"], ex["target_values"])
    rg_msgs = prompts.rg_sft_messages(ex["history"], ex["target_values"], ex["reply"])
    rg_prompt = rg_msgs[:-1]
    pairs = []
    for r in ex["rejected"]:
        row = {"prompt": rg_prompt, "chosen": [prompts.assistant(ex["reply"])],
               "rejected": [prompts.assistant(r["text"])]}
        pairs.append({"id": content_id(row), **base, **row, "rejected_id": r["id"], "rejected_values": r["values"]})
    return {
        "tvd": [{"id": content_id(tvd_msgs), **base, "messages": tvd_msgs}],
        "rg_sft": [{"id": content_id(rg_msgs), **base, "messages": rg_msgs}],
        "rg_pairs": pairs,
    }


def prompt_and_answers(name: str, rec: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(prompt messages, answer messages) of a record; a pair has two answers (chosen, rejected)."""
    if name == "rg_pairs":
        return rec["prompt"], [rec["chosen"][0], rec["rejected"][0]]
    return rec["messages"][:-1], [rec["messages"][-1]]


def length_check(name: str, rec: dict[str, Any], count: TokenCounter, max_length: int, min_answer: int) -> str | None:
    """None when the record fits, else the drop reason: the prompt leaves < min_answer tokens, or an answer is cut."""
    prompt, answers = prompt_and_answers(name, rec)
    n_prompt = count(prompt, True)
    if max_length - n_prompt < min_answer:
        return "prompt_leaves_no_room"
    for i, a in enumerate(answers):
        if count([*prompt, a], False) > max_length:
            return ("chosen_truncated", "rejected_truncated")[i] if name == "rg_pairs" else "answer_truncated"
    return None


def dedup_key(name: str, rec: dict[str, Any]) -> str:
    prompt, answers = prompt_and_answers(name, rec)
    return content_id([_norm(m["content"]) for m in [*prompt, *answers]])


def assemble(examples: list[dict[str, Any]], cfg: DatasetsParams, seed: int, count: TokenCounter
             ) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, Any]]:
    """Examples → {dataset: {split: records}} and stats (sizes, drops, labels, pairs per post)."""
    examples = sorted(examples, key=lambda e: e["outcome_id"])
    threshold = positivity_threshold(cfg, [e["positivity"] for e in examples])
    rule = cfg.model_copy(update={"positivity_threshold": threshold})
    n_candidates = len(examples)
    examples = [e for e in examples if is_positive(e["positivity"], e["positivity_prev"], rule)]
    kept_records: list[tuple[str, dict[str, Any]]] = []
    drops: dict[str, Counter] = {d: Counter() for d in DATASETS}
    n_positive = len(examples)
    without = sum(not e["target_values"] for e in examples)
    for name in DATASETS:  # a positive reply that expresses no value has no target values: no example
        if without:
            drops[name]["no_value_present"] = without
    examples = [e for e in examples if e["target_values"]]
    seen: dict[str, set[str]] = {d: set() for d in DATASETS}
    seen_examples: set[str] = set()
    for ex in examples:
        if cfg.dedup:
            # A repost repeats a whole example: drop all of it, or its spare rejected comments would sneak in as new pairs.
            key = content_id([[_norm(t) for _, t in ex["history"]], _norm(ex["reply"]), ex["target_values"]])
            if key in seen_examples:
                for name in DATASETS:
                    drops[name]["duplicate"] += 1
                continue
            seen_examples.add(key)
        for name, recs in format_records(ex).items():
            kept = 0
            for rec in recs:
                if name == "rg_pairs" and kept >= cfg.max_rejected_per_example:
                    break  # the rest were spares
                if cfg.dedup:
                    key = dedup_key(name, rec)
                    if key in seen[name]:
                        drops[name]["duplicate"] += 1
                        continue
                    seen[name].add(key)
                reason = length_check(name, rec, count, cfg.max_length, cfg.min_answer_tokens)
                if reason:
                    drops[name][reason] += 1
                    if reason != "rejected_truncated":
                        break  # the prompt or the chosen reply is what does not fit: no candidate can
                    continue
                kept_records.append((name, rec))
                kept += 1
    # Splits are balanced on what survived the filters, so a split cannot end up with threads but no records.
    split_of = assign_splits(dict(Counter(r["thread_id"] for _, r in kept_records)), cfg.splits, seed)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {d: {s: [] for s in cfg.splits} for d in DATASETS}
    for name, rec in kept_records:
        out[name][split_of[rec["thread_id"]]].append(rec)
    stats = dataset_stats(out, drops, split_of)
    stats["positivity"] = {"threshold": round(threshold, 5), "candidates": n_candidates, "positive": n_positive,
                           "positive_rate": round(n_positive / n_candidates, 4) if n_candidates else 0.0}
    return out, stats


def dataset_stats(out: dict[str, dict[str, list[dict[str, Any]]]], drops: dict[str, Counter],
                  split_of: dict[str, str]) -> dict[str, Any]:
    """Sizes per split, drops, TVD label distribution over the 20 categories, pairs per post."""
    stats: dict[str, Any] = {}
    for name, splits in out.items():
        stats[name] = {"size": {s: len(r) for s, r in splits.items()},
                       "total": sum(len(r) for r in splits.values()),
                       "dropped": dict(sorted(drops[name].items())),
                       "threads": {s: len({r["thread_id"] for r in rs}) for s, rs in splits.items()}}
    labels = Counter(v for recs in out["tvd"].values() for r in recs for v in r["target_values"])
    stats["tvd"]["label_distribution"] = {v: labels.get(v, 0) for v in VALUE_CATEGORIES}
    stats["tvd"]["label_categories_used"] = sum(1 for v in VALUE_CATEGORIES if labels.get(v))
    stats["tvd"].update(tvd_label_information(out["tvd"]))
    pairs_per_post = Counter(r["thread_id"] for recs in out["rg_pairs"].values() for r in recs)
    stats["rg_pairs"]["pairs_per_post"] = {
        "posts_with_pairs": len(pairs_per_post),
        "mean": round(sum(pairs_per_post.values()) / len(pairs_per_post), 3) if pairs_per_post else 0.0,
        "max": max(pairs_per_post.values(), default=0),
    }
    stats["split_threads"] = dict(Counter(split_of.values()))
    return stats


def tvd_label_information(splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """How much the TVD labels say: entropy of the category distribution (bits; log2 20 = 4.32 is uniform) and the
    test F1 of the predictor that always answers the most frequent training labels (set_scores micro F1). That
    predictor answers k labels, k = the mean label count of the training examples, rounded (`majority`), and the
    paper-style k = 3 (`majority_top3`, the figure that was 0.75 when every example had its top-3)."""
    from tasks.train.evaluation import majority_prior, set_scores

    every = [r["target_values"] for recs in splits.values() for r in recs]
    counts = Counter(v for t in every for v in t)
    total = sum(counts.values())
    entropy = -sum(n / total * math.log2(n / total) for n in counts.values() if n) if total else 0.0
    train = [r["target_values"] for r in splits.get("train", [])]
    test = [r["target_values"] for r in splits.get("test", [])]
    k = max(1, round(sum(map(len, train)) / len(train))) if train else prompts.TVD_K
    out: dict[str, Any] = {"label_entropy_bits": round(entropy, 4),
                           "label_entropy_normalised": round(entropy / math.log2(N_VALUES), 4),
                           "labels_per_example": round(total / len(every), 4) if every else 0.0,
                           "label_set_sizes": dict(sorted(Counter(str(len(t)) for t in every).items()))}
    for name, kk in (("majority", k), ("majority_top3", prompts.TVD_K)):
        prior = majority_prior(train, kk)
        f1 = set_scores([prior] * len(test), test)["f1"] if test else math.nan
        out[name] = {"k": kk, "labels": prior, "test_f1": round(f1, 4) if test else None}
    return out


# ------------------------------------------------------------------------------------------------------ tokens
def estimate_tokens(messages: list[dict[str, str]], add_generation_prompt: bool, chars_per_token: float) -> int:
    """Fallback when the training tokenizer is absent: ceil(chars / chars_per_token) per message + 4 tokens of
    chat-template framing per message (+3 for the generation prompt). ~4 chars/token is typical of BPE on English."""
    n = sum(math.ceil(len(m["content"]) / chars_per_token) + 4 for m in messages)
    return n + (3 if add_generation_prompt else 0)


def make_token_counter(tokenizer_dir: Path, chars_per_token: float) -> tuple[TokenCounter, str]:
    """A token counter for chat messages and a description of what it is (tokenizer path+hash, or 'estimate')."""
    if not (tokenizer_dir / "tokenizer.json").is_file() and not (tokenizer_dir / "tokenizer_config.json").is_file():
        log.warning("tokenizer %s absent: length filters use the estimate ceil(chars/%.1f)+4 per message "
                    "(run the stage that builds models/tokenizer first for exact counts)", tokenizer_dir, chars_per_token)
        return (lambda msgs, gen: estimate_tokens(msgs, gen, chars_per_token)), f"estimate:chars/{chars_per_token}"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tok.model_max_length = 1 << 30  # we only count: no "sequence longer than the maximum" warning per long example
    tpl = tokenizer_dir / "chat_template.jinja"
    if tpl.is_file():
        tok.chat_template = tpl.read_text(encoding="utf-8")  # the explicit artifact wins (same as tasks.base_model)
    desc = f"tokenizer:{tokenizer_dir}@{sha256_tree(tokenizer_dir)[:12]}"
    if tok.chat_template:
        def count(msgs: list[dict[str, str]], gen: bool) -> int:
            ids: Any = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
                ids = ids["input_ids"]
            return len(ids)
    else:
        log.warning("tokenizer %s has no chat template: counting the joined message texts", tokenizer_dir)

        def count(msgs: list[dict[str, str]], gen: bool) -> int:
            return len(tok("\n".join(m["content"] for m in msgs))["input_ids"])
    log.info("length filters measured with %s", desc)
    return count, desc


# ------------------------------------------------------------------------------------------------------ I/O
def read_shards(threads_dir: Path, annotated_dir: Path) -> list[tuple[Path, Path]]:
    """(thread shard, annotation shard) pairs by shard name; raises with the stage to run when inputs are missing."""
    shards = sorted((threads_dir / "shards").glob("*.jsonl"))
    if not shards:
        raise DatasetsError(f"{threads_dir}/shards: no thread shards; run the crawl stage (`dvc repro crawl`)")
    pairs = []
    for s in shards:
        a = annotated_dir / "shards" / s.name
        if not a.is_file():
            raise DatasetsError(f"{a}: annotation shard missing for {s}; run the annotate stage (`dvc repro annotate`)")
        pairs.append((s, a))
    return pairs


def extract_shard(threads_path: Path, annotated_path: Path, cfg: DatasetsParams, seed: int, thread_ids: set[str] | None,
                  rule: PresenceRule, rates: Sequence[float]) -> ThreadResult:
    """Read one thread shard and its annotations; extract every thread (optionally only `thread_ids`)."""
    ann = {r["id"]: r for r in read_jsonl(annotated_path)}
    res = ThreadResult()
    for thread in read_jsonl(threads_path):
        if thread_ids is not None and thread["thread_id"] not in thread_ids:
            continue
        r = extract_thread(thread, ann, cfg, seed, rule, rates)
        res.examples += r.examples
        res.counters.update(r.counters)
    return res


def select_threads(pairs: list[tuple[Path, Path]], limit: int) -> set[str] | None:
    """The first `limit` thread ids in id order (None = all)."""
    if not limit:
        return None
    ids = sorted(t["thread_id"] for s, _ in pairs for t in read_jsonl(s))
    return set(ids[:limit])


def extraction_stats(counters: Counter, positive: int) -> dict[str, Any]:
    """Counters of the extraction plus the positive OP replies and the positive-reply rates."""
    c = {k: int(v) for k, v in sorted(counters.items())}
    on_path, cand = c.get("op_replies_on_path", 0), c.get("op_replies_candidates", 0)
    return {
        **c, "op_replies_positive": positive,
        "positive_rate_on_path": round(positive / on_path, 4) if on_path else 0.0,
        "positive_rate_candidates": round(positive / cand, 4) if cand else 0.0,
        "positive_rate_all_op_replies": round(positive / c["op_replies"], 4) if c.get("op_replies") else 0.0,
    }


def check_bad_fraction(counters: Counter, max_bad_fraction: float) -> None:
    """Utterances without a usable annotation are skipped and counted; too many means a broken annotate run."""
    n, bad = counters.get("utterances", 0), counters.get("utterances_without_annotation", 0)
    if n and bad / n > max_bad_fraction:
        raise DatasetsError(
            f"{bad}/{n} utterances have no usable annotation (20 value probs + positivity in [0,1]), more than "
            f"datasets.max_bad_fraction={max_bad_fraction}; re-run the annotate stage or raise the threshold in params.yaml"
        )
    if bad:
        log.warning("%d/%d utterances lack a usable annotation: they are skipped", bad, n)


CARD_NOTES = {
    "tvd": ("Target value detector", "history o1..o_t (seeker/supporter transcript) → `Values: A; B; C`, the value "
            "categories present (presence rule) in the OP's next, positive reply o_{t+1}, highest lift over the "
            "corpus base rate first, 1 to 3 of them.",
            "`{id, thread_id, messages: [system, user, assistant], target_values, history_ids, reply_id, outcome_id}`"),
    "rg_sft": ("Reference generator, SFT", "history o1..o_t + target values v_{t+1} → the commenter's reply c_t that "
               "preceded the positive OP reply.",
               "`{id, thread_id, target_values, messages: [system, user, assistant], history_ids, reply_id, outcome_id}`"),
    "rg_pairs": ("Reference generator, preference pairs", "chosen = the original c_t; rejected = another commenter "
                 "comment in the same thread whose present values share none with the target values.",
                 "TRL conversational preference: `{id, thread_id, target_values, prompt: [system, user], "
                 "chosen: [assistant], rejected: [assistant], rejected_id, rejected_values, ...}`"),
}


def render_card(name: str, stats: dict[str, Any], extraction: dict[str, Any], cfg: DatasetsParams, seed: int,
                token_desc: str, inputs: dict[str, str]) -> str:
    """A short markdown data card: what, source, filters, counts, licence."""
    title, what, fmt = CARD_NOTES[name]
    s = stats[name]
    lines = [
        f"# Data card: {name} ({title})", "",
        f"**What:** {what}", f"**Format:** {fmt}; prompts from `tasks/domain/prompts.py` version {prompts.PROMPT_VERSION}.", "",
        "## Source",
        "Reddit threads from `data/threads` (crawl stage) with value/emotion annotations from `data/annotated` "
        f"(annotate stage). Input hashes: threads `{inputs['threads'][:12]}`, annotations `{inputs['annotated'][:12]}`.",
        "", "## Filters",
        f"- positive OP reply: rule `{cfg.positivity_rule}` (threshold {stats['positivity']['threshold']}"
        f"{f' = quantile {cfg.positivity_quantile} of candidate OP replies' if cfg.positivity_quantile else ''}, "
        f"min increase {cfg.positivity_min_increase} over the previous OP turn)",
        "- dialogue paths alternate the OP and one commenter; utterances shorter than "
        f"{cfg.min_chars} chars after cleaning ([deleted]/[removed]) are skipped",
        f"- values present by the presence rule of `{cfg.value_detector}/presence.json`; target values ranked by "
        f"lift over the corpus base rate, at most {prompts.TVD_K}; positive replies without any: "
        f"{s['dropped'].get('no_value_present', 0)} dropped",
        "- rejected comments: present values disjoint from the target values, "
        f"at most {cfg.max_rejected_per_example} per example (seed {seed})",
        f"- history turns longer than {cfg.max_turn_chars or 'unlimited'} chars are cut at a word boundary (' …'); "
        "answers are never cut",
        f"- de-duplication on normalised (prompt, answer): {cfg.dedup}",
        f"- length: max_length {cfg.max_length} tokens, prompt must leave >= {cfg.min_answer_tokens}; "
        f"measured with {token_desc}",
        f"- splits by thread, seed {seed}, fractions {cfg.splits}", "",
        "## Counts",
        f"- records per split: {s['size']} (total {s['total']}); threads per split: {s['threads']}",
        f"- dropped: {s['dropped'] or 'none'}",
        f"- OP replies: {extraction.get('op_replies', 0)}, on a valid path: {extraction.get('op_replies_on_path', 0)}, "
        f"positive: {extraction.get('op_replies_positive', 0)} (rate on path {extraction['positive_rate_on_path']})",
    ]
    if name == "tvd":
        dist = ", ".join(f"{k}: {v}" for k, v in s["label_distribution"].items() if v)
        lines.append(f"- label distribution (every label counted): {dist or 'empty'}")
        lines.append(f"- label entropy {s['label_entropy_bits']} bits (uniform: 4.32); always-the-{s['majority']['k']}"
                     f"-most-frequent predictor, test F1: {s['majority']['test_f1']}")
    if name == "rg_pairs":
        lines.append(f"- pairs per post: {s['pairs_per_post']}")
    lines += [
        "", "## Licence and use",
        "Derived from third-party Reddit user content. The tiny profile's threads come from a public research repo "
        "with **no licence** (see the mirror's PROVENANCE.md): research and test use only; do not redistribute or "
        "publish these files or quotes from them. Usernames are pseudonymised by the crawl stage; texts may hold "
        "sensitive personal stories.", "",
    ]
    return "\n".join(lines)


def run(cfg: DatasetsParams, seed: int, threads_dir: Path | None = None, annotated_dir: Path | None = None,
        out_dir: Path | None = None, extract: Callable[..., ThreadResult] | None = None) -> dict[str, Any]:
    """Read threads + annotations, build the three datasets, write splits, cards and stats; return the stats.

    `extract(threads_path, annotated_path, cfg, seed, thread_ids)` defaults to `extract_shard`; the flow passes
    a per-shard Prefect task cached across runs.
    """
    extract = extract or extract_shard
    rule = load_rule(cfg)
    threads_dir, annotated_dir = threads_dir or THREADS_DIR, annotated_dir or ANNOTATED_DIR
    out_dir = out_dir or OUT_DIR
    pairs = read_shards(threads_dir, annotated_dir)
    rates = base_rates(a for _, a in pairs)
    keep = select_threads(pairs, cfg.limit_threads)
    counters: Counter = Counter()
    examples: list[dict[str, Any]] = []
    for i, (s, a) in enumerate(pairs, 1):
        r = extract(s, a, cfg, seed, keep, rule, rates)
        examples += r.examples
        counters.update(r.counters)
        log.info("[%d/%d] %s: %d examples", i, len(pairs), s.name, len(r.examples))
    check_bad_fraction(counters, cfg.max_bad_fraction)
    count, token_desc = make_token_counter(paths.ROOT / cfg.tokenizer, cfg.chars_per_token)
    out, stats = assemble(examples, cfg, seed, count)
    # Never publish data that breaks its contracts (tests/data checks the same on the written files).
    bad = contract_violations(out, {e["thread_id"] for e in examples})
    if bad:
        raise DatasetsError("datasets break their contracts (a bug, not bad input):\n  " + "\n  ".join(bad))
    extraction = extraction_stats(counters, stats["positivity"]["positive"])
    inputs = {"threads": sha256_tree(threads_dir / "shards"), "annotated": sha256_tree(annotated_dir / "shards")}
    for name, splits in out.items():
        for split, recs in splits.items():
            write_jsonl(out_dir / name / f"{split}.jsonl", recs)
        with atomic_open(out_dir / name / "DATA_CARD.md") as f:
            f.write(render_card(name, stats, extraction, cfg, seed, token_desc, inputs))
    report = {"extraction": extraction, **stats, "presence": rule.to_dict(), "base_rates": [round(b, 6) for b in rates],
              "length_measure": token_desc, "prompt_version": prompts.PROMPT_VERSION}
    write_json(out_dir / "stats.json", report)
    return report


def iter_records(out_dir: Path, name: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """(split, record) of a written dataset."""
    for f in sorted((out_dir / name).glob("*.jsonl")):
        for r in read_jsonl(f):
            yield f.stem, r


# ------------------------------------------------------------------------------------------------------ contracts
def contract_violations(data: dict[str, dict[str, list[dict[str, Any]]]], known_threads: set[str] | None = None,
                        limit: int = 20) -> list[str]:
    """Data-contract breaches of built datasets ({dataset: {split: records}}), at most `limit` messages.

    No thread in two splits (across all datasets); every record has an id (unique per dataset) and a thread id
    (known, when `known_threads` is given); every TVD answer is `Values: A; B; C` with 1 to 3 distinct valid
    categories equal to its target values; chosen != rejected; rejected values share none with the target values.
    """
    bad: list[str] = []
    split_of: dict[str, str] = {}
    for name, splits in data.items():
        ids: set[str] = set()
        for split, recs in splits.items():
            for i, r in enumerate(recs):
                where = f"{name}/{split}[{i}]"
                tid = r.get("thread_id")
                if not tid or (known_threads is not None and tid not in known_threads):
                    bad.append(f"{where}: thread_id {tid!r} does not trace to a thread")
                elif split_of.setdefault(tid, split) != split:
                    bad.append(f"{where}: thread {tid} is in both {split_of[tid]} and {split}")
                if not r.get("id") or r["id"] in ids:
                    bad.append(f"{where}: missing or repeated id {r.get('id')!r}")
                if r.get("id"):
                    ids.add(r["id"])
                target = r.get("target_values") or []
                if name == "tvd":
                    answer = r["messages"][-1]
                    got = prompts.parse_tvd_answer(answer["content"])
                    if (answer["role"] != "assistant" or got is None or not 1 <= len(got) <= prompts.TVD_K
                            or answer["content"] != prompts.format_tvd_answer(got) or got != list(target)):
                        bad.append(f"{where}: TVD answer {answer['content']!r} is not 1-{prompts.TVD_K} distinct "
                                   f"valid categories matching target_values {target}")
                elif name == "rg_sft":
                    if r["messages"][-1]["role"] != "assistant" or not r["messages"][-1]["content"].strip():
                        bad.append(f"{where}: RG SFT row does not end with a non-empty assistant reply")
                elif name == "rg_pairs":
                    ch, rj = r["chosen"][0]["content"], r["rejected"][0]["content"]
                    if _norm(ch) == _norm(rj):
                        bad.append(f"{where}: chosen == rejected")
                    shared = set(r.get("rejected_values", [])) & set(target)
                    if shared:
                        bad.append(f"{where}: rejected shares values {sorted(shared)} with the target values")
                if name != "tvd" and (not target or any(v not in VALUE_CATEGORIES for v in target)):
                    bad.append(f"{where}: target_values {target} are not valid categories")
                if len(bad) >= limit:
                    return bad
    return bad


def load_datasets(out_dir: Path | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The written datasets as {dataset: {split: records}}."""
    out_dir = out_dir or OUT_DIR
    data: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name in DATASETS:
        data[name] = {f.stem: [] for f in sorted((out_dir / name).glob("*.jsonl"))}  # empty splits stay visible
        for split, r in iter_records(out_dir, name):
            data[name][split].append(r)
    return data


# ------------------------------------------------------------------------------------------------------ Prefect
def _file_digest(p: Path) -> str:
    return sha256_tree(p)


def code_digest() -> str:
    """Hash of the modules extraction depends on, so the shard cache never survives a logic change unnoticed."""
    here = Path(__file__).parent
    files = ("datasets.py", "domain/prompts.py", "domain/taxonomy.py", "annotators/presence.py")
    return content_id([sha256_tree(here / f) for f in files])


def extract_shard_cached(threads_path: Path, annotated_path: Path, cfg: DatasetsParams, seed: int,
                         thread_ids: set[str] | None, rule: PresenceRule, rates: Sequence[float]) -> ThreadResult:
    """`extract_shard` through a Prefect task cached on the shards' content hashes, the params, the presence rule,
    the base rates and CACHE_VERSION."""
    out = _extract_task()(str(threads_path), _file_digest(threads_path), str(annotated_path),
                          _file_digest(annotated_path), cfg.model_dump(), seed,
                          sorted(thread_ids) if thread_ids is not None else None,
                          rule.to_dict(), list(rates), f"{CACHE_VERSION}:{code_digest()}")
    return ThreadResult(examples=out["examples"], counters=Counter(out["counters"]))


def _extract_task():
    from tasks.common.config import DatasetsParams
    from tasks.common.orchestration import shard_task

    @shard_task(name="datasets-extract-shard")
    def extract_shard_task(threads_path: str, threads_sha: str, annotated_path: str, annotated_sha: str,
                           cfg: dict[str, Any], seed: int, thread_ids: list[str] | None,
                           rule: dict[str, Any], rates: list[float], cache_version: str) -> dict[str, Any]:
        # The sha inputs are what the cache key needs; the paths alone would hide a changed annotation shard.
        r = extract_shard(Path(threads_path), Path(annotated_path), DatasetsParams(**cfg), seed,
                          set(thread_ids) if thread_ids is not None else None, PresenceRule.from_dict(rule), rates)
        return {"examples": r.examples, "counters": dict(r.counters)}

    return extract_shard_task


def build_task():
    """Whole-stage Prefect task (not cached: DVC decides whether the stage runs)."""
    from prefect import task

    @task(name="datasets-build")
    def build(cfg: Any, seed: int) -> dict[str, Any]:
        return run(cfg, seed, extract=extract_shard_cached)

    return build
