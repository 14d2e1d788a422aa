"""Evaluation of the trained helpers (pure: models and records in, numbers out; no files, no MLflow).

* TVD: parse "Values: A; B; C", score the predicted categories (1 to 3) against the label set (micro P/R/F1 and the
  Touché-style macro F1), next to a majority-prior baseline that always predicts the 3 most frequent training
  categories; unparsable outputs are counted as malformed and score as the valid names they contain.
* RG: completion log-probabilities under a model give the eval loss (NLL per assistant token), the raw preference
  accuracy (log p(chosen) > log p(rejected)) for any model, and the DPO implicit reward accuracy and margin of a
  policy against its reference (the SFT model).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tasks.domain import prompts
from tasks.domain.taxonomy import VALUE_CATEGORIES

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------------- TVD
def parse_values(text: str) -> tuple[list[str], bool]:
    """Categories named in a TVD answer and whether it is malformed, by the one TVD parser (tasks.domain.prompts):
    well-formed = exactly the trained `Values: A; B; C` (1 to 3 names: the labels name the values present in the next
    reply); a malformed answer scores as the valid names it contains."""
    return list(prompts.parse_tvd_answer(text) or []), not prompts.tvd_answer_is_exact(text)


def majority_prior(label_sets: Sequence[Sequence[str]], k: int = 3) -> list[str]:
    """The k most frequent categories in the training labels (ties broken by taxonomy order)."""
    counts = Counter(c for s in label_sets for c in s)
    return sorted(VALUE_CATEGORIES, key=lambda c: (-counts[c], VALUE_CATEGORIES.index(c)))[:k]


def set_scores(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro P/R/F1 over predicted vs gold category sets, and macro P/R over categories with F1 = 2PR/(P+R)."""
    tp = fp = fn = 0
    per = {c: [0, 0, 0] for c in VALUE_CATEGORIES}  # tp, fp, fn
    for p, g in zip(preds, golds, strict=True):
        ps, gs = set(p), set(g)
        tp += len(ps & gs)
        fp += len(ps - gs)
        fn += len(gs - ps)
        for c in ps & gs:
            per[c][0] += 1
        for c in ps - gs:
            per[c][1] += 1
        for c in gs - ps:
            per[c][2] += 1
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    # Macro over the categories that occur in gold or predictions (the official measure averages all 20).
    mp = sum(t / (t + f) if t + f else 0.0 for t, f, _ in per.values()) / len(per)
    mr = sum(t / (t + n) if t + n else 0.0 for t, _, n in per.values()) / len(per)
    mf = 2 * mp * mr / (mp + mr) if mp + mr else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "macro_precision": mp, "macro_recall": mr, "macro_f1": mf}


def tvd_metrics(generations: Sequence[str], golds: Sequence[Sequence[str]], prior: Sequence[str]) -> dict[str, float]:
    """Model scores, majority-prior baseline scores and the malformed count for one test split."""
    parsed = [parse_values(g) for g in generations]
    model = set_scores([p for p, _ in parsed], golds)
    base = set_scores([list(prior)] * len(golds), golds)
    n = len(generations)
    malformed = sum(m for _, m in parsed)
    out = {f"tvd.{k}": v for k, v in model.items()}
    out.update({f"baseline.{k}": v for k, v in base.items()})
    out.update({"n_test": n, "malformed": malformed, "malformed_share": malformed / n if n else 0.0})
    return out


# --------------------------------------------------------------------------------------------------- generation
def generate(model: Any, tok: Any, prompts: Sequence[list[dict[str, str]]], max_new_tokens: int, batch_size: int,
             max_length: int, regex: str | None = None) -> list[str]:
    """Greedy completions of chat prompts (left padding, prompt cut from the left to fit the context). `regex`:
    decode under that constraint, with the enforcer the local server uses (tasks.llm.serve), i.e. as served."""
    import torch
    from transformers import LogitsProcessorList

    enforcer_data = None
    if regex is not None:
        from tasks.llm.serve import enforcer_tokenizer_data

        enforcer_data = enforcer_tokenizer_data(tok)

    tok.padding_side, tok.truncation_side = "left", "left"
    room = max(8, max_length - max_new_tokens)
    out: list[str] = []
    model.eval()
    for i in range(0, len(prompts), batch_size):
        texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts[i:i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=room, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        procs = LogitsProcessorList()
        if regex is not None:
            from lmformatenforcer import RegexParser

            from tasks.llm.serve import EnforcerLogitsProcessor, parser_config

            procs.append(EnforcerLogitsProcessor(enforcer_data, RegexParser(regex, parser_config()),
                                                 enc["input_ids"].shape[1]))
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, logits_processor=procs)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [o.strip() for o in out]


def served_tvd(model: Any, tok: Any, prompts_: Sequence[list[dict[str, str]]], max_new_tokens: int, batch_size: int,
               max_length: int) -> tuple[list[list[str]], list[int]]:
    """TVD answers as the consumers get them (tasks.simulate.target_values, over HTTP there): decoded under
    `tvd_regex`, then only the slots that repeated decoded again with the distinct values fixed, for at most TVD_K
    rounds. Returns the distinct values per prompt (fewer than TVD_K = unusable) and the resampling rounds used."""
    from tasks.domain.sim_prompts import tvd_regex

    chosen: list[list[str]] = [[] for _ in prompts_]
    rounds = [0] * len(prompts_)
    first = generate(model, tok, prompts_, max_new_tokens, batch_size, max_length, regex=tvd_regex())
    for i, g in enumerate(first):
        chosen[i] = list(prompts.parse_tvd_answer(g) or [])
    for r in range(1, prompts.TVD_K):
        todo = [i for i, c in enumerate(chosen) if len(c) < prompts.TVD_K]
        for i in todo:  # each prompt has its own fixed values, so its own regex: one at a time
            (g,) = generate(model, tok, [prompts_[i]], max_new_tokens, 1, max_length, regex=tvd_regex(fixed=chosen[i]))
            chosen[i] += [v for v in (prompts.parse_tvd_answer(g) or []) if v not in chosen[i]]
            rounds[i] = r
    return [c[: prompts.TVD_K] for c in chosen], rounds


# --------------------------------------------------------------------------------------------------- log-probs
def completion_logps(model: Any, tok: Any, prompts: Sequence[list[dict[str, str]]],
                     completions: Sequence[list[dict[str, str]]], max_length: int, batch_size: int
                     ) -> tuple[list[float], list[int]]:
    """Sum of log p(completion tokens | prompt) and the number of completion tokens, per record."""
    import torch

    seqs: list[tuple[list[int], int]] = []
    for p, c in zip(prompts, completions, strict=True):
        ptxt = tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(list(p) + list(c), tokenize=False)
        if not full.startswith(ptxt):  # a template that rewrites earlier turns: fall back to plain concatenation
            full = ptxt + c[0]["content"] + (tok.eos_token or "")
        pid = tok(ptxt, add_special_tokens=False)["input_ids"]
        cid = tok(full[len(ptxt):], add_special_tokens=False)["input_ids"]
        ids = (pid + cid)[:max_length]  # keep the start, like DPOConfig(truncation_mode="keep_start")
        seqs.append((ids, min(len(pid), len(ids))))
    sums: list[float] = []
    counts: list[int] = []
    model.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for i in range(0, len(seqs), batch_size):
        batch = seqs[i:i + batch_size]
        width = max(len(s) for s, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for j, (s, plen) in enumerate(batch):
            ids[j, :len(s)] = torch.tensor(s)
            att[j, :len(s)] = 1
            mask[j, plen:len(s)] = True
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=att.to(model.device)).logits.float().cpu()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        m = mask[:, 1:]
        sums += (logp * m).sum(-1).tolist()
        counts += m.sum(-1).tolist()
    return sums, counts


def nll_per_token(sums: Sequence[float], counts: Sequence[int]) -> float:
    n = sum(counts)
    return -sum(sums) / n if n else math.nan


def preference_metrics(chosen: Sequence[float], rejected: Sequence[float], ref_chosen: Sequence[float] | None = None,
                       ref_rejected: Sequence[float] | None = None, beta: float = 0.1) -> dict[str, float]:
    """Raw preference accuracy/margin of a model; with a reference, DPO implicit-reward accuracy and margin."""
    n = len(chosen)
    if n == 0:
        return {}
    out = {"pref_accuracy": sum(c > r for c, r in zip(chosen, rejected, strict=True)) / n,
           "logp_margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / n}
    if ref_chosen is not None and ref_rejected is not None:
        margins = [beta * ((c - rc) - (r - rr)) for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected, strict=True)]
        out["reward_accuracy"] = sum(m > 0 for m in margins) / n
        out["reward_margin"] = sum(margins) / n
        out["reward_chosen"] = sum(beta * (c - rc) for c, rc in zip(chosen, ref_chosen, strict=True)) / n
        out["reward_rejected"] = sum(beta * (r - rr) for r, rr in zip(rejected, ref_rejected, strict=True)) / n
    return out


def value_hits(detected: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]) -> float:
    """Share of generated references in which at least one target value was detected."""
    if not targets:
        return math.nan
    return sum(bool(set(d) & set(t)) for d, t in zip(detected, targets, strict=True)) / len(targets)
