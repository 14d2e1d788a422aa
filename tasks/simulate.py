"""Stage `simulate`: seeker-simulator x supporter-teacher dialogues over the train personas.

Each supporter turn: TVD -> target values, RG -> reference response (both served models, through the same
OpenAI-compatible client), then the teacher's 4 reasoning steps as one structured answer (issue and state; key
content of the reference; adopt it Yes/No + why; strategy) plus two alternative responses (with and without the
reference), so the student sees both adoption choices; the turn's `response` is the alternative its adoption
decision names. The seeker reveals its problem gradually, reports its emotion intensity (1-5) every turn and may end
the conversation after `min_turns` supporter turns; its reply after each supporter turn is that turn's
`seeker_reply` (what a look-ahead reward reads). Every per-call seed derives from the params `seed`.

Pure core: `simulate_dialogue` (talks to an `LLM`, no file I/O), `to_record`, `split_by_persona`.
I/O shell: `run` (progress file, resume, outputs, report). The Prefect flow is flows/simulate.py.

Resume: finished dialogues are appended (fsync) to a progress file under the cache dir and skipped on restart;
the calls of unfinished ones replay from the response cache. Either way nothing already paid is requested again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from tasks.common.hashing import content_id
from tasks.common.io import read_jsonl, write_jsonl
from tasks.domain import prompts
from tasks.domain.sim_prompts import (
    SIM_PROMPT_VERSION,
    SUPPORTER_SYSTEM,
    TEACHER_SCHEMA,
    seeker_messages,
    seeker_schema,
    teacher_messages,
    teacher_response,
    tvd_regex,
)
from tasks.llm.client import LLM, BudgetExceeded, LLMError, stable_seed

log = logging.getLogger(__name__)

# Bump when the dialogue logic changes in a way the prompts' version does not show (it is part of dialogue ids).
CACHE_VERSION = "simulate-v2"  # v2: per-turn seeker_reply, seeds from params seed, distinct TVD slots
ROLES = ["seeker", "supporter_teacher", "tvd", "rg"]


# ------------------------------------------------------------------------------------------ checks (re-ask on error)
def check_tvd(text: str) -> list[str]:
    """The categories a TVD answer names (distinct, in order); fewer than TVD_K is fine, the caller fills the rest."""
    values = prompts.parse_tvd_answer(text)
    if not values:
        raise ValueError(f"need '{prompts.TVD_PREFIX} A; B; C' naming value categories")
    return values


def check_reference(text: str) -> str:
    if not text.strip():
        raise ValueError("empty reference response")
    return text.strip()


def check_nonempty(fields: tuple[str, ...]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(obj: dict[str, Any]) -> dict[str, Any]:
        empty = [f for f in fields if not str(obj[f]).strip()]
        if empty:
            raise ValueError(f"fields {empty} are empty")
        return obj

    return check


# ------------------------------------------------------------------------------------------ core
def dialogue_id(persona: dict[str, Any], sim: dict[str, Any], seed: int) -> str:
    """Content id of one dialogue; every per-call seed derives from it, so the params `seed` decides the sampling."""
    return content_id({"v": CACHE_VERSION, "prompts": [SIM_PROMPT_VERSION, prompts.PROMPT_VERSION], "seed": seed,
                       "persona": persona["id"], "min_turns": sim["min_turns"], "max_turns": sim["max_turns"]})


async def ask_seeker(llm: LLM, persona: dict[str, Any], history: list[tuple[str, str]], seed: int, tag: str,
                     may_end: bool = True) -> dict[str, Any]:
    """The seeker simulator's next turn: {utterance, emotion_intensity, end_conversation} (also used by rollouts);
    with `may_end` False its schema only allows end_conversation false."""
    s = await llm.ask("seeker", seeker_messages(persona, history), schema=seeker_schema(may_end),
                      schema_name="seeker_turn", check=check_nonempty(("utterance",)), seed=seed, tag=tag)
    if not may_end:
        s["end_conversation"] = False  # the schema had no such field: leaving was not allowed yet
    return dict(s)


async def ask_rg(llm: LLM, history: list[tuple[str, str]], values: list[str], seed: int, tag: str) -> str:
    """The reference generator's reference response for those values."""
    return await llm.ask("rg", prompts.rg_prompt(history, values), check=check_reference, seed=seed, tag=tag)


async def target_values(llm: LLM, history: list[tuple[str, str]], did: str, *key: Any) -> tuple[list[str], int]:
    """TVD_K distinct target values and the number of resampling rounds it took (seeds from did, *key, round).

    The answer is decoded under the `Values: A; B; C` regex at the role's own temperature. A slot that repeats an
    earlier one is decoded again with the distinct values fixed as literals and the free slots limited to the other
    categories (`tvd_regex(fixed=...)`): only what repeated is resampled, never the whole answer at a hotter
    temperature. Each round adds at least one new category on a server that honours the regex, so TVD_K rounds
    suffice; an endpoint that ignores it fails the call after them."""
    msgs = prompts.tvd_messages(history)
    chosen: list[str] = []
    for r in range(prompts.TVD_K):
        got = await llm.ask("tvd", msgs, regex=tvd_regex(fixed=chosen), check=check_tvd, hot_reasks=False,
                            seed=stable_seed(did, "tvd", *key, r), tag=did)
        chosen += [v for v in got if v not in chosen]
        if len(chosen) >= prompts.TVD_K:
            return chosen[: prompts.TVD_K], r
    raise LLMError(f"tvd: {prompts.TVD_K} rounds gave only {chosen}; does the endpoint honour structured_outputs?")


async def ask_tvd(llm: LLM, history: list[tuple[str, str]], did: str, *key: Any) -> list[str]:
    """The TVD's target values for the next supporter turn (rollouts; `target_values` without the count)."""
    return (await target_values(llm, history, did, *key))[0]


#: One supporter turn: (history so far, turn number k >= 1, the seeker's last state) -> the turn's record, which
#: holds at least the `response` the seeker sees. The teacher below is one; the evaluation's policies are others.
SupporterStep = Callable[[list[tuple[str, str]], int, dict[str, Any]], Awaitable[dict[str, Any]]]


async def converse(llm: LLM, persona: dict[str, Any], supporter: SupporterStep, min_turns: int, max_turns: int,
                   seed_key: str, tag: str) -> dict[str, Any]:
    """One dialogue: the seeker opens; each supporter turn is `supporter(...)`; then the seeker answers (the turn's
    `seeker_reply`). The seeker may end the dialogue only after `min_turns` supporter turns (its schema says so).
    Seeker seeds derive from `seed_key` and the turn number only, so dialogues that share a key share their seeker's
    dice."""
    history: list[tuple[str, str]] = []
    seeker_states: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []

    async def seeker(k: int) -> dict[str, Any]:
        s = await ask_seeker(llm, persona, history, stable_seed(seed_key, "seeker", k), tag, may_end=k >= min_turns)
        seeker_states.append(s)
        history.append(("seeker", s["utterance"].strip()))
        return s

    s = await seeker(0)
    ended_by = "max_turns"
    for k in range(1, max_turns + 1):
        turn = await supporter(list(history), k, s)
        turn["response"] = str(turn["response"]).strip()
        turns.append(turn)
        history.append(("supporter", turn["response"]))
        s = await seeker(k)
        turn["seeker_reply"] = {"utterance": s["utterance"].strip(), "emotion_intensity": int(s["emotion_intensity"]),
                                "end": bool(s["end_conversation"])}
        if s["end_conversation"]:  # the schema allows it only from min_turns on
            ended_by = "seeker"
            break
    return {"history": history, "seeker_states": seeker_states, "turns": turns, "ended_by": ended_by}


async def simulate_dialogue(llm: LLM, persona: dict[str, Any], min_turns: int, max_turns: int,
                            did: str) -> dict[str, Any]:
    """One dialogue: seeker opens; each supporter turn = TVD, RG, teacher; then the seeker answers."""

    async def teacher(history: list[tuple[str, str]], k: int, s: dict[str, Any]) -> dict[str, Any]:
        values, resamples = await target_values(llm, history, did, k)
        reference = await ask_rg(llm, history, values, stable_seed(did, "rg", k), did)
        t = await llm.ask("supporter_teacher", teacher_messages(history, values, reference), schema=TEACHER_SCHEMA,
                          schema_name="supporter_turn", seed=stable_seed(did, "teacher", k), tag=did,
                          check=check_nonempty(("alt_response_with_reference", "alt_response_without_reference")))
        return {"turn": k, "target_values": values, "tvd_resamples": resamples, "reference": reference,
                "seeker_intensity_before": s["emotion_intensity"], **t, "response": teacher_response(t)}

    return await converse(llm, persona, teacher, min_turns, max_turns, did, did)


def to_record(did: str, persona: dict[str, Any], sim: dict[str, Any]) -> dict[str, Any]:
    """SFT-ready record: `messages` (system, user=seeker, assistant=supporter, ending on the supporter), every
    reasoning field per supporter turn, and per-dialogue metadata."""
    history = sim["history"]
    # The seeker's last message answers the final supporter turn; it is kept in meta, not as a dangling user turn.
    convo = history[:-1] if history and history[-1][0] == "seeker" and len(history) > 1 else history
    messages = [{"role": "system", "content": SUPPORTER_SYSTEM}] + [
        {"role": "user" if r == "seeker" else "assistant", "content": t} for r, t in convo]
    adoption = [t["adopt_reference"] for t in sim["turns"]]
    trace = [int(s["emotion_intensity"]) for s in sim["seeker_states"]]
    return {
        "id": did, "persona_id": persona["id"], "messages": messages, "turns": sim["turns"],
        "meta": {
            "persona_id": persona["id"], "problem_type": persona["problem_type"],
            "emotion_type": persona["emotion_type"], "initial_intensity": persona["initial_intensity"],
            "intensity_trace": trace, "final_intensity": trace[-1] if trace else None,
            "final_seeker_utterance": history[-1][1] if history and history[-1][0] == "seeker" else None,
            "target_values": [t["target_values"] for t in sim["turns"]], "adoption": adoption,
            "adoption_rate": (adoption.count("Yes") / len(adoption)) if adoption else 0.0,
            "strategies": [t["strategy"] for t in sim["turns"]], "n_supporter_turns": len(sim["turns"]),
            "ended_by": sim["ended_by"], "prompt_versions": [SIM_PROMPT_VERSION, prompts.PROMPT_VERSION],
        },
    }


def split_by_persona(records: list[dict[str, Any]], validation_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split by persona (hash order): a persona's dialogues all land on one side."""
    pids = sorted({r["persona_id"] for r in records}, key=lambda p: content_id([seed, p]))
    n_val = round(len(pids) * validation_fraction)
    if validation_fraction > 0 and n_val == 0 and len(pids) >= 2:
        n_val = 1
    val = set(pids[:n_val])
    return [r for r in records if r["persona_id"] not in val], [r for r in records if r["persona_id"] in val]


# ------------------------------------------------------------------------------------------ I/O shell
class Progress:
    """Append-only JSONL of finished dialogues (one fsync'd line each): survives kill -9, read back on resume."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict[str, Any]] = {}
        if path.is_file():
            with open(path, "rb") as f:
                for line in f:
                    try:
                        r = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue  # a line cut by a kill: that dialogue is simply redone (from the cache)
                    self.done[r["id"]] = r
        self._f = open(path, "ab")  # noqa: SIM115 - closed by close()

    def add(self, rec: dict[str, Any]) -> None:
        self._f.write(orjson.dumps(rec) + b"\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done[rec["id"]] = rec

    def close(self) -> None:
        self._f.close()


async def run_to_progress(items: list[tuple[str, Any]], work: Callable[[str, Any], Awaitable[dict[str, Any]]],
                          progress: Progress, limit: int, what: str) -> dict[str, Any]:
    """`work(key, item)` for every item whose key is not in `progress` yet, at most `limit` at once; each record it
    returns is appended to `progress` (fsync'd) as soon as it is done. An LLMError fails that item (counted and
    logged, the others go on); BudgetExceeded stops starting new ones. Returns counters (also used by rollouts)."""
    sem = asyncio.Semaphore(limit)
    failed: list[str] = []
    stopped = {"budget": False}
    todo = [(k, x) for k, x in items if k not in progress.done]
    log.info("%d %ss to run, %d already finished", len(todo), what, len(items) - len(todo))
    t0 = time.monotonic()

    async def one(key: str, item: Any) -> None:
        async with sem:
            if stopped["budget"]:
                return
            try:
                rec = await work(key, item)
            except BudgetExceeded as e:
                if not stopped["budget"]:
                    log.warning("budget reached: %s", e)
                stopped["budget"] = True
                return
            except LLMError as e:
                log.warning("%s %s failed: %s", what, key, e)
                failed.append(key)
                return
            await asyncio.to_thread(progress.add, rec)  # fsync off the event loop
            log.info("%s %s done (%d/%d, %.1f s)", what, key, len(progress.done), len(items), time.monotonic() - t0)

    await asyncio.gather(*(one(k, x) for k, x in todo))
    return {"failed": len(failed), "stopped_by_budget": stopped["budget"], "wall_s": time.monotonic() - t0}


async def simulate_all(llm: LLM, personas: list[dict[str, Any]], sim_cfg: dict[str, Any], progress: Progress,
                       concurrency: int, seed: int) -> dict[str, Any]:
    """Run every persona's dialogue (bounded concurrency); finished ones go to `progress`. Returns counters."""

    async def work(did: str, p: dict[str, Any]) -> dict[str, Any]:
        return to_record(did, p, await simulate_dialogue(llm, p, sim_cfg["min_turns"], sim_cfg["max_turns"], did))

    try:
        return await run_to_progress([(dialogue_id(p, sim_cfg, seed), p) for p in personas], work, progress, concurrency,
                                     "dialogue")
    finally:
        await llm.aclose()


def summarise(train: list[dict[str, Any]], val: list[dict[str, Any]]) -> dict[str, float]:
    allr = train + val
    adoption = [a for r in allr for a in r["meta"]["adoption"]]
    turns = [r["meta"]["n_supporter_turns"] for r in allr]
    drops = [r["meta"]["intensity_trace"][0] - r["meta"]["intensity_trace"][-1] for r in allr
             if r["meta"]["intensity_trace"]]
    resamples = [t.get("tvd_resamples", 0) for r in allr for t in r["turns"]]
    return {"dialogues": len(allr), "train_dialogues": len(train), "validation_dialogues": len(val),
            "supporter_turns": sum(turns), "mean_supporter_turns": sum(turns) / len(turns) if turns else 0.0,
            "min_supporter_turns": min(turns) if turns else 0,
            "tvd_turns_resampled": sum(x > 0 for x in resamples),
            "adoption_rate": adoption.count("Yes") / len(adoption) if adoption else 0.0,
            "mean_intensity_drop": sum(drops) / len(drops) if drops else 0.0,
            "ended_by_seeker": sum(r["meta"]["ended_by"] == "seeker" for r in allr)}


def run(llm: LLM, personas_path: Path, out_dir: Path, sim_cfg: dict[str, Any], seed: int,
        progress_dir: Path, concurrency: int) -> dict[str, Any]:
    """Simulate, resume-safe; write out_dir/{train,validation}.jsonl atomically; return the report."""
    personas = list(read_jsonl(personas_path))
    if not personas:
        raise ValueError(f"{personas_path}: no personas (run the personas stage first: `dvc repro personas`)")
    if sim_cfg.get("personas"):
        personas = sorted(personas, key=lambda p: p["id"])[: sim_cfg["personas"]]
    run_key = content_id({"v": CACHE_VERSION, "seed": seed, "personas": sorted(p["id"] for p in personas),
                          "min": sim_cfg["min_turns"], "max": sim_cfg["max_turns"],
                          "roles": {r: [x.model, x.fingerprint, x.temperature, x.max_tokens]
                                    for r, x in sorted(llm.roles.items())}})
    progress = Progress(progress_dir / f"{run_key}.jsonl")
    try:
        counters = asyncio.run(simulate_all(llm, personas, sim_cfg, progress, concurrency, seed))
    finally:
        progress.close()
    wanted = {dialogue_id(p, sim_cfg, seed) for p in personas}
    records = sorted((r for d, r in progress.done.items() if d in wanted), key=lambda r: r["id"])
    train, val = split_by_persona(records, sim_cfg["validation_fraction"], seed)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "validation.jsonl", val)
    report: dict[str, Any] = {"personas": len(personas), **summarise(train, val), **counters,
                              "progress_file": str(progress.path)}
    report["failed_fraction"] = counters["failed"] / max(1, len(personas))
    return report
