"""Stage `rollouts`: for sampled supporter turns (states) of the *training* dialogues, the SFT supporter proposes K
candidates; each candidate is continued h seeker turns by the seeker simulator (the SFT supporter answering in
between, with fresh TVD values and RG references), at least twice; every continuation seeker turn is scored by the
value detector and the emotion model. The rewards and pairs are computed from these rows by `mine_pairs`.

Common random numbers: continuation c of *every* candidate of a state uses the same persona, the same per-call
seeds (seeker, TVD, RG, supporter at step k of continuation c) and the same sampling settings, so two candidates
are compared on matched seeker randomness and a pair reflects the candidate, not simulator noise.

Pure core: `sample_states`, `rollout_state` / `rollout_states` (talk to an `LLM`, no file I/O), `score_rows`.
Shell: `run_shard` (one shard: progress file, LLM calls, scoring) behind the cached Prefect task `rollout_shard`;
the flow is flows/rollouts.py. Resume: finished states are appended (fsync) to a progress file and skipped on
restart; unfinished ones replay their calls from the LLM response cache; finished shards come from Prefect's cache.
Nothing already paid is requested again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.common.config import LLMParams, RolloutsParams
from tasks.common.hashing import content_id, sha256_file
from tasks.common.io import read_jsonl, write_jsonl
from tasks.common.orchestration import shard_task
from tasks.domain.supporter_format import FORMAT_VERSION, answer_regex, parse, response_of, supporter_messages
from tasks.llm.client import LLM, Role, stable_seed
from tasks.simulate import Progress, ask_rg, ask_seeker, ask_tvd, run_to_progress
from tasks.supporter.examples import turn_states

log = logging.getLogger(__name__)

#: Bump when the rollout logic changes in a way the task source hash would not show (it keys shard caches).
CACHE_VERSION = f"rollouts-v1/{FORMAT_VERSION}"
SUPPORTER = "supporter"
ROLES = ["seeker", "tvd", "rg", SUPPORTER]


class RolloutError(RuntimeError):
    """Rollout inputs that cannot work; the message says which stage to run or which key to fix."""


# ------------------------------------------------------------------------------------------ states
def state_id(dialogue_id: str, turn: int) -> str:
    return content_id(["state", dialogue_id, turn])


def sample_states(records: Sequence[dict[str, Any]], cfg: RolloutsParams, seed: int) -> list[dict[str, Any]]:
    """`states_per_dialogue` supporter turns per training dialogue (seeded hash order), at most `max_states` in
    all; each state is what the supporter saw at that turn. Sorted by state id (stable shards)."""
    picked: list[dict[str, Any]] = []
    for r in sorted(records, key=lambda r: r["id"]):
        ts = sorted(turn_states(r), key=lambda s: content_id([seed, "state", r["id"], s["turn"]]))
        for s in ts[: cfg.states_per_dialogue]:
            s = {k: v for k, v in s.items() if k != "teacher"}
            picked.append({"state_id": state_id(s["dialogue_id"], s["turn"]), **s})
    picked.sort(key=lambda s: content_id([seed, "cap", s["state_id"]]))
    if cfg.max_states:
        picked = picked[: cfg.max_states]
    return sorted(picked, key=lambda s: s["state_id"])


def supporter_role(llm: LLMParams, cfg: RolloutsParams) -> LLMParams:
    """`llm` plus the SFT supporter role (and its folder among the local models when it is served locally)."""
    local = dict(llm.local_models)
    if cfg.supporter.base_url == "local":
        local[cfg.supporter.model] = cfg.supporter_model
    return llm.model_copy(update={"roles": {**llm.roles, SUPPORTER: cfg.supporter}, "local_models": local})


# ------------------------------------------------------------------------------------------ the async core
def _check_answer(text: str) -> str:
    if parse(text) is None:
        raise ValueError("the answer does not follow the five-line supporter format")
    return text


async def ask_supporter(llm: LLM, history: list[tuple[str, str]], values: list[str], reference: str,
                        cfg: RolloutsParams, seed: int, tag: str) -> str:
    """One answer of the SFT supporter (the full five-line text; the seeker sees `response_of` it)."""
    regex = answer_regex() if cfg.constrain_format else None
    check = _check_answer if cfg.constrain_format else None
    return str(await llm.ask(SUPPORTER, supporter_messages(history, values, reference), regex=regex, check=check,
                             seed=seed, tag=tag))


async def continue_candidate(llm: LLM, state: dict[str, Any], persona: dict[str, Any], response: str, c: int,
                             cfg: RolloutsParams) -> list[dict[str, Any]]:
    """Continuation c of one candidate: up to h seeker turns, the SFT supporter answering in between. Seeds depend
    on (state, c, step), never on the candidate: the common random numbers of the K candidates."""
    sid = state["state_id"]
    history = [*[tuple(x) for x in state["history"]], ("supporter", response)]
    turns: list[dict[str, Any]] = []
    for k in range(1, cfg.horizon + 1):
        s = await ask_seeker(llm, persona, history, stable_seed(sid, "cont", c, "seeker", k), sid)
        utt = s["utterance"].strip()
        turns.append({"utterance": utt, "emotion_intensity": int(s["emotion_intensity"]),
                      "end": bool(s["end_conversation"])})
        history.append(("seeker", utt))
        if s["end_conversation"] or k == cfg.horizon:  # a seeker who leaves voices nothing more: later turns count 0
            break
        values = await ask_tvd(llm, history, sid, "cont", c, k)
        reference = await ask_rg(llm, history, values, stable_seed(sid, "cont", c, "rg", k), sid)
        answer = await ask_supporter(llm, history, values, reference, cfg, stable_seed(sid, "cont", c, "sup", k), sid)
        history.append(("supporter", response_of(answer)))
    return turns


async def rollout_state(llm: LLM, state: dict[str, Any], persona: dict[str, Any],
                        cfg: RolloutsParams) -> dict[str, Any]:
    """K candidates of one state, each with `continuations` continuations; identical candidates are continued
    once (and marked `duplicate_of`), so a pair can never have chosen == rejected."""
    sid = state["state_id"]
    hist = [tuple(x) for x in state["history"]]
    texts = await asyncio.gather(*(ask_supporter(llm, hist, state["target_values"], state["reference"], cfg,
                                                 stable_seed(sid, "candidate", j), sid)
                                   for j in range(cfg.candidates)))
    cands: list[dict[str, Any]] = []
    first_of: dict[str, str] = {}
    for j, text in enumerate(texts):
        resp = response_of(text)
        fields = parse(text)
        cid = f"{sid}-{j}"
        cands.append({"candidate_id": cid, "index": j, "text": text, "response": resp,
                      "well_formed": fields is not None, "adopt": fields["adopt_reference"] if fields else None,
                      "duplicate_of": first_of.get(resp)})
        first_of.setdefault(resp, cid)
    unique = [c for c in cands if c["duplicate_of"] is None]
    conts = await asyncio.gather(*(continue_candidate(llm, state, persona, c["response"], k, cfg)
                                   for c in unique for k in range(cfg.continuations)))
    by_id = {c["candidate_id"]: conts[i * cfg.continuations:(i + 1) * cfg.continuations]
             for i, c in enumerate(unique)}
    for c in cands:
        c["continuations"] = by_id[c["duplicate_of"] or c["candidate_id"]]
    return {"id": sid, "candidates": cands}


def states_in_flight(max_concurrency: int, cfg: RolloutsParams) -> int:
    """States started at once: enough parallel continuation chains (K x continuations each) to keep
    `max_concurrency` requests in flight through the phases where a state has fewer (its K proposals)."""
    return 2 * math.ceil(max_concurrency / (cfg.candidates * cfg.continuations)) + 1


async def rollout_states(llm: LLM, states: Sequence[dict[str, Any]], personas: dict[str, dict[str, Any]],
                         cfg: RolloutsParams, progress: Progress, max_concurrency: int) -> dict[str, Any]:
    """Roll out every state not yet in `progress` (finished ones are appended there); returns counters."""

    async def work(sid: str, s: dict[str, Any]) -> dict[str, Any]:
        return await rollout_state(llm, s, personas[s["persona_id"]], cfg)

    try:
        return await run_to_progress([(s["state_id"], s) for s in states], work, progress,
                                     states_in_flight(max_concurrency, cfg), "state")
    finally:
        await llm.aclose()


# ------------------------------------------------------------------------------------------ rows and scoring
def candidate_rows(states: Sequence[dict[str, Any]], done: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per candidate in the reward contract's shape (docs/CONTRACTS.md), states in the given order."""
    rows = []
    for s in states:
        rec = done.get(s["state_id"])
        if rec is None:
            continue
        for c in rec["candidates"]:
            rows.append({"state_id": s["state_id"], "candidate_id": c["candidate_id"], "dialogue_id": s["dialogue_id"],
                         "turn": s["turn"], "target_values": s["target_values"],
                         "seeker_intensity_before": s["seeker_intensity_before"], "index": c["index"],
                         "text": c["text"], "response": c["response"], "well_formed": c["well_formed"],
                         "adopt": c["adopt"], "duplicate_of": c["duplicate_of"],
                         "continuations": [[dict(t) for t in cont] for cont in c["continuations"]]})
    return rows


def score_rows(rows: list[dict[str, Any]], models: Any, annotate_cfg: Any) -> None:
    """Add `value_probs` (20 categories) and `positivity` to every continuation turn, in one batched pass of the
    value detector and the emotion model (tasks/annotate.py) over all utterances."""
    from tasks.annotate import annotate_texts
    from tasks.domain.taxonomy import VALUE_CATEGORIES

    turns = [t for r in rows for cont in r["continuations"] for t in cont]
    if not turns:
        return
    out = annotate_texts([t["utterance"] for t in turns], models, annotate_cfg)
    for i, t in enumerate(turns):
        t["value_probs"] = {c: round(float(p), 5) for c, p in zip(VALUE_CATEGORIES, out["values"][i], strict=True)}
        t["positivity"] = round(float(out["positivity"][i]), 5)


def summarise(rows: Sequence[dict[str, Any]], cfg: RolloutsParams) -> dict[str, float]:
    """Counts of the stage's metrics: candidates, continuations, turns, format and adoption of the candidates."""
    conts = [c for r in rows for c in r["continuations"]]
    unique = [r for r in rows if r["duplicate_of"] is None]
    formed = [r for r in unique if r["well_formed"]]
    return {"states_done": float(len({r["state_id"] for r in rows})), "candidates": float(len(rows)),
            "candidates_unique": float(len(unique)), "candidates_duplicate": float(len(rows) - len(unique)),
            "continuations": float(len(conts)), "continuation_turns": float(sum(len(c) for c in conts)),
            "continuations_ended_early": float(sum(len(c) < cfg.horizon for c in conts)),
            "candidates_well_formed_share": len(formed) / len(unique) if unique else 0.0,
            "candidates_adoption_rate": (sum(r["adopt"] == "Yes" for r in formed) / len(formed)) if formed else 0.0}


# ------------------------------------------------------------------------------------------ one shard
def run_shard(shard_path: Path, personas: dict[str, dict[str, Any]], cfg: RolloutsParams, llm: LLM,
              progress_path: Path, max_concurrency: int, models: Any, annotate_cfg: Any) -> dict[str, Any]:
    """Roll out one shard of states (resume-safe) and score it; returns {rows, counters, ledger}."""
    states = list(read_jsonl(shard_path))
    missing = sorted({s["persona_id"] for s in states} - set(personas))
    if missing:
        raise RolloutError(f"{shard_path}: personas {missing[:3]} not in the persona file; re-run `dvc repro personas` "
                           "and `dvc repro simulate` together")
    progress = Progress(progress_path)
    try:
        counters = asyncio.run(rollout_states(llm, states, personas, cfg, progress, max_concurrency))
    finally:
        progress.close()
    rows = candidate_rows(states, progress.done)
    t0 = time.time()
    score_rows(rows, models, annotate_cfg)
    counters.update(states=len(states), done=len({r["state_id"] for r in rows}), score_s=time.time() - t0)
    return {"rows": rows, "counters": counters, "ledger": llm.ledger.metrics()}


def roles_key(roles: dict[str, Role]) -> dict[str, list[Any]]:
    """What of the resolved roles changes the answers (never the URL, a random port, or the key)."""
    return {r: [x.model, x.fingerprint, x.temperature, x.max_tokens] for r, x in sorted(roles.items())}


def write_shards(states: Sequence[dict[str, Any]], size: int, work_dir: Path) -> list[tuple[Path, str]]:
    """The states in shards of `size` under work_dir (content-named, so a shard's name is its identity)."""
    out = []
    for i in range(0, len(states), size):
        part = list(states[i:i + size])
        path = work_dir / f"{content_id([s['state_id'] for s in part])}.jsonl"
        if not path.is_file():
            write_jsonl(path, part)
        out.append((path, sha256_file(path)))
    return out


def _cache_policy() -> Any:
    """Inputs + source, minus `endpoint` (resolved roles: the tiny profile's random port and any API key)."""
    from prefect.cache_policies import INPUTS, TASK_SOURCE

    return (INPUTS - "endpoint") + TASK_SOURCE


@shard_task(name="rollouts-shard", retries=0, cache_policy=_cache_policy())
def rollout_shard(shard_path: str, shard_hash: str, personas_path: str, personas_hash: str, cfg: dict[str, Any],
                  roles_fingerprint: dict[str, list[Any]], llm_opts: dict[str, Any], scoring: dict[str, Any],
                  model_versions: dict[str, str], progress_dir: str, endpoint: dict[str, Any] | None = None,
                  cache_version: str = CACHE_VERSION) -> dict[str, Any]:
    """Prefect task for one shard. Cache key: shard hash, personas hash, rollout params, what the roles answer
    with, the scoring models' versions, CACHE_VERSION and this source. `endpoint` (resolved roles: URLs and keys)
    is excluded from the key: the tiny profile's server listens on a random port."""
    from tasks.annotate import load_models
    from tasks.common.config import AnnotateParams

    c = RolloutsParams(**cfg)
    if endpoint is None:
        raise RolloutError("rollout_shard needs the resolved roles (endpoint)")
    roles = {n: Role(**r) for n, r in endpoint.items()}
    llm = LLM(roles, llm_opts["cache_path"], max_concurrency=llm_opts["max_concurrency"],
              timeout_s=llm_opts["timeout_s"], max_retries=llm_opts["max_retries"],
              max_reasks=llm_opts["max_reasks"], budget_usd=llm_opts["budget_usd"],
              max_string_chars=llm_opts["max_string_chars"])
    personas = {p["id"]: p for p in read_jsonl(personas_path)}
    key = content_id({"v": cache_version, "shard": shard_hash, "cfg": cfg, "roles": roles_fingerprint})
    a = AnnotateParams(**scoring)
    return run_shard(Path(shard_path), personas, c, llm, Path(progress_dir) / f"{key}.jsonl",
                     llm_opts["max_concurrency"], load_models(a.value_model, a.emotion_model), a)

