"""Stage `evaluate`: every supporter variant talks with the seeker simulator on the *eval* personas; dialogues are
scored by the automatic metrics and the LLM judge; per-variant means with bootstrap CIs and paired differences
against the baseline. The human row scores ESConv conversations with the same functions.

Paired design: every variant meets every persona with the same seeker seeds (`persona_key`: seed, persona,
length), and its supporter-side seeds derive from the same key, so a difference between two variants on one
persona is the variants', not the dice's. Dialogues have a fixed length (`evaluate.turns` supporter turns; the
seeker cannot leave early), so shares and final intensities compare like with like.

Pure core: `to_contract` (simulation -> contract dialogue), `statistics`; async: `generate`, `judge_everything`;
I/O shell: `run` (progress file, detector, scoring). MLflow logging: tasks/evaluate/runs.py. Flow: flows/evaluate.py.
Resume: finished dialogues are appended (fsync) to a progress file and skipped on restart; judge and supporter calls
replay from the LLM response cache.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks.common.hashing import content_id
from tasks.domain import prompts, supporter_format
from tasks.domain.sim_prompts import SIM_PROMPT_VERSION
from tasks.evaluate import judge as judging
from tasks.evaluate import metrics, stats
from tasks.evaluate.policy import Policy
from tasks.llm.client import LLM, BudgetExceeded, LLMError
from tasks.simulate import Progress, converse

log = logging.getLogger(__name__)

# Bump when the dialogue logic changes in a way the prompt versions do not show (it is part of dialogue ids).
CACHE_VERSION = "evaluate-v1"
#: The llm.roles every evaluation needs (endpoints of evaluate.endpoints come on top).
ROLES = ["seeker", "supporter_teacher", "tvd", "rg", "judge"]
HUMAN = "human-esconv"
#: MLflow metric name (the contract's) -> the per-dialogue key it is the mean of.
METRICS = {"suggestion": "suggestion", "experience": "experience", "information": "information",
           "overall": "overall", "intensity": "final_intensity", "seeker_value": "seeker_value",
           "supporter_value": "supporter_value"}
SUPPORTER_FIELDS = ("issue_and_state", "reference_key_content", "adopt_reference", "adopt_reason", "strategy",
                    "planned_strategy", "target_values", "target_values_shown", "reference", "answer", "malformed")


# ------------------------------------------------------------------------------------------ ids and records
def persona_key(persona: dict[str, Any], turns: int, seed: int) -> str:
    """What every variant shares for one persona: the seeker's seeds and the supporter-side seeds."""
    return content_id({"v": CACHE_VERSION, "seed": seed, "persona": persona["id"], "turns": turns,
                       "prompts": [SIM_PROMPT_VERSION, prompts.PROMPT_VERSION, supporter_format.FORMAT_VERSION]})


def dialogue_id(policy: Policy, llm: LLM, pkey: str) -> str:
    """A variant's dialogue with one persona: its flags and the model that writes its replies are part of it."""
    flags = {"kind": policy.kind, "target_values": policy.target_values, "reference": policy.reference,
             "model": [llm.roles[policy.role].model, llm.roles[policy.role].fingerprint]}
    return content_id({"variant": policy.name, "flags": flags, "persona_key": pkey})


def to_contract(did: str, variant: str, persona: dict[str, Any], sim: dict[str, Any]) -> dict[str, Any]:
    """A simulated dialogue as a contract record: seeker turns with their reported intensity, supporter turns with
    the response the seeker saw plus the policy's reasoning (shown in transcripts, never to the judge)."""
    turns: list[dict[str, Any]] = []
    si = ti = 0
    for role, text in sim["history"]:
        if role == "seeker":
            inten = int(sim["seeker_states"][si]["emotion_intensity"])
            turns.append({"role": "seeker", "text": text, "intensity": inten})
            si += 1
        else:
            t = sim["turns"][ti]
            turns.append({"role": "supporter", "text": text, "intensity": None,
                          **{k: t[k] for k in SUPPORTER_FIELDS if k in t}})
            ti += 1
    return {"id": did, "variant": variant, "persona_id": persona["id"], "problem_type": persona.get("problem_type"),
            "emotion_type": persona.get("emotion_type"), "persona_initial_intensity": persona.get("initial_intensity"),
            "turns": turns}


# ------------------------------------------------------------------------------------------ generation
async def generate(llm: LLM, policies: Sequence[Policy], personas: Sequence[dict[str, Any]], turns: int, seed: int,
                   progress: Progress) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Every (variant, persona) dialogue not yet in `progress`, all variants in one event loop (the semaphore of
    `llm` bounds the requests in flight). Returns the dialogue ids wanted per variant, and counters."""
    counters: dict[str, dict[str, Any]] = {p.name: {"failed": 0, "stopped_by_budget": False} for p in policies}
    stopped = {"budget": False}
    wanted: dict[str, list[str]] = {p.name: [] for p in policies}
    todo = []
    for p in policies:
        for persona in personas:
            pkey = persona_key(persona, turns, seed)
            did = dialogue_id(p, llm, pkey)
            wanted[p.name].append(did)
            if did not in progress.done:
                todo.append((p, persona, pkey, did))
    log.info("evaluate: %d dialogues to run (%d variants x %d personas), %d already finished", len(todo),
             len(policies), len(personas), len(policies) * len(personas) - len(todo))
    t0 = time.monotonic()

    async def one(p: Policy, persona: dict[str, Any], pkey: str, did: str) -> None:
        if stopped["budget"]:
            counters[p.name]["stopped_by_budget"] = True
            return
        try:
            sim = await converse(llm, persona, p.step(llm, pkey, did), turns, turns, pkey, did)
        except BudgetExceeded as e:
            if not stopped["budget"]:
                log.warning("budget reached: %s", e)
            stopped["budget"] = True
            counters[p.name]["stopped_by_budget"] = True
            return
        except LLMError as e:
            log.warning("variant %s, persona %s: dialogue failed: %s", p.name, persona["id"], e)
            counters[p.name]["failed"] += 1
            return
        await asyncio.to_thread(progress.add, to_contract(did, p.name, persona, sim))
        log.info("evaluate: %s / %s done (%d finished, %.1f s)", p.name, persona["id"], len(progress.done),
                 time.monotonic() - t0)

    await asyncio.gather(*(one(*x) for x in todo))
    return wanted, counters


async def judge_everything(llm: LLM, by_variant: dict[str, list[dict[str, Any]]], rubrics: dict[str, str],
                           roles: Sequence[str], pairwise: tuple[str, str] | None,
                           ) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, list[dict[str, Any]]]]:
    """Judge every dialogue with every judge role ({role: {variant: [per-dialogue verdicts]}}); with `pairwise`
    = (baseline, rubric), compare each variant's dialogue with the baseline's on the same persona, both orders."""
    keys = [(role, v) for role in roles for v in by_variant]  # every judge call in flight at once (one semaphore)
    done = await asyncio.gather(*(judging.judge_all(llm, role, by_variant[v], rubrics) for role, v in keys))
    verdicts: dict[str, dict[str, list[dict[str, Any]]]] = {role: {} for role in roles}
    for (role, v), res in zip(keys, done, strict=True):
        verdicts[role][v] = res
    pairs: dict[str, list[dict[str, Any]]] = {}
    if pairwise is not None:
        base, rubric = pairwise
        base_by_persona = {d["persona_id"]: d for d in by_variant.get(base, []) if d.get("persona_id")}
        for v, ds in by_variant.items():
            if v == base or v == HUMAN:
                continue
            matched = [(d, base_by_persona[d["persona_id"]]) for d in ds if d.get("persona_id") in base_by_persona]
            res = await asyncio.gather(*(judging.compare(llm, roles[0], d, b, rubric) for d, b in matched))
            pairs[v] = [{"persona_id": d["persona_id"], **r} for (d, _), r in zip(matched, res, strict=True)]
    return verdicts, pairs


# ------------------------------------------------------------------------------------------ statistics
def attach_judgements(scored: list[dict[str, Any]], first: list[dict[str, Any]],
                      second: list[dict[str, Any]] | None) -> None:
    """Judge scores onto the per-dialogue rows (dimension -> score; `judge` holds rationales)."""
    for i, row in enumerate(scored):
        row["judge"] = first[i]
        for dim, v in first[i].items():
            row[dim] = v["score"]
        if second is not None:
            row["judge_b"] = {dim: v["score"] for dim, v in second[i].items()}


def kappas(rows: list[dict[str, Any]], dims: Sequence[str]) -> dict[str, dict[str, float]]:
    """Quadratic-weighted kappa of the two judges per dimension over the rows both scored."""
    out = {}
    for dim in dims:
        pairs = [(r[dim], r["judge_b"][dim]) for r in rows
                 if "judge_b" in r and r.get(dim) is not None and r["judge_b"].get(dim) is not None]
        out[dim] = {"kappa": stats.weighted_kappa([a for a, _ in pairs], [b for _, b in pairs]), "n": len(pairs)}
    return out


def pairwise_rates(results: list[dict[str, Any]]) -> dict[str, float]:
    """Win / tie / loss shares of a variant against the baseline (verdict 'x' = the variant won both orders)."""
    done = [r["verdict"] for r in results if r.get("verdict")]
    n = len(done)
    return {"win": done.count("x") / n if n else math.nan, "tie": done.count("tie") / n if n else math.nan,
            "loss": done.count("y") / n if n else math.nan, "n": float(n)}


def statistics(scored: dict[str, list[dict[str, Any]]], baseline: str, n_boot: int, alpha: float, seed: int,
               ) -> dict[str, dict[str, Any]]:
    """Per variant: every metric's mean with its bootstrap CI, and the paired difference against the baseline."""
    base = {r["persona_id"]: r for r in scored.get(baseline, []) if r.get("persona_id")}
    out: dict[str, dict[str, Any]] = {}
    for v, rows in scored.items():
        est: dict[str, Any] = {}
        for name, key in METRICS.items():
            s = content_id([seed, v, name], 8)  # one stream per (variant, metric): CIs do not move when others do
            est[name] = stats.mean_ci([r.get(key) for r in rows], n_boot, alpha, int(s, 16)).to_dict()
            if v != baseline and v != HUMAN and base:
                mine = {r["persona_id"]: r.get(key) for r in rows if r.get("persona_id")}
                theirs = {p: r.get(key) for p, r in base.items()}
                est[f"{name}.diff"] = stats.paired_diff_ci(mine, theirs, n_boot, alpha, int(s, 16) ^ 1).to_dict()
        out[v] = est
    return out


# ------------------------------------------------------------------------------------------ the stage's work
def run(llm: LLM, policies: Sequence[Policy], personas: list[dict[str, Any]], human: list[dict[str, Any]],
        present: Callable[[Sequence[str]], list[list[str]]], cfg: Any, seed: int,
        progress_dir: Path) -> dict[str, Any]:
    """Generate (resumable), judge, score and summarise. `cfg` is the `evaluate` params group."""
    if not personas:
        raise ValueError("evaluate: no eval personas (run the personas stage first: `dvc repro personas`)")
    run_key = content_id({"v": CACHE_VERSION, "personas": sorted(p["id"] for p in personas), "turns": cfg.turns,
                          "seed": seed, "roles": {r: [x.model, x.fingerprint, x.temperature, x.max_tokens]
                                                  for r, x in sorted(llm.roles.items())}})
    progress = Progress(progress_dir / f"evaluate-{run_key}.jsonl")
    judges = [cfg.judge.role] + ([cfg.judge.second] if cfg.judge.second else [])
    rubrics = dict(cfg.judge.dimensions)
    t0 = time.monotonic()

    async def work() -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], Any, Any]:
        try:
            wanted, counters = await generate(llm, policies, personas, cfg.turns, seed, progress)
            by_variant = {v: sorted((progress.done[d] for d in dids if d in progress.done),
                                    key=lambda d: d["persona_id"]) for v, dids in wanted.items()}
            to_judge = dict(by_variant)
            if human and cfg.human.judge:
                to_judge[HUMAN] = human
            verdicts, pairs = await judge_everything(
                llm, to_judge, rubrics, judges,
                (cfg.baseline, cfg.judge.pairwise_rubric) if cfg.judge.pairwise else None)
            return counters, by_variant, verdicts, pairs
        finally:
            await llm.aclose()

    try:
        counters, by_variant, verdicts, pairs = asyncio.run(work())
    finally:
        progress.close()
    if human:
        by_variant[HUMAN] = human
        counters[HUMAN] = {"failed": 0, "stopped_by_budget": False}
    scored: dict[str, list[dict[str, Any]]] = {}
    for v, ds in by_variant.items():
        rows = metrics.score_dialogues(ds, present)
        for r, d in zip(rows, ds, strict=True):
            r["persona_id"] = d.get("persona_id")
        if v in verdicts[cfg.judge.role]:
            attach_judgements(rows, verdicts[cfg.judge.role][v],
                              verdicts[cfg.judge.second][v] if cfg.judge.second else None)
        scored[v] = rows
    estimates = statistics(scored, cfg.baseline, cfg.bootstrap.n, cfg.bootstrap.alpha, seed)
    all_rows = [r for rows in scored.values() for r in rows]
    report = {
        "dialogues": by_variant, "scored": scored, "estimates": estimates,
        "means": {v: metrics.summarise(rows, [*metrics.MEAN_KEYS, *rubrics]) for v, rows in scored.items()},
        "pairwise": {v: {"rates": pairwise_rates(r), "comparisons": r} for v, r in pairs.items()},
        "kappa": kappas(all_rows, list(rubrics)) if cfg.judge.second else {},
        "kappa_by_variant": {v: kappas(rows, list(rubrics)) for v, rows in scored.items()} if cfg.judge.second else {},
        "counters": counters, "wall_s": time.monotonic() - t0, "progress_file": str(progress.path),
    }
    for v, c in counters.items():
        c["dialogues"] = len(by_variant.get(v, []))
        c["failed_fraction"] = c["failed"] / max(1, len(personas)) if v != HUMAN else 0.0
    return report


def review_pairs(by_variant: dict[str, list[dict[str, Any]]], baseline: str) -> list[dict[str, Any]]:
    """Pairs for the human review page (tasks/review/pairs.py, docs/review.md): every variant's dialogue against the
    baseline's with the same persona — what the seeker saw, no reasoning, no scores."""
    base = {d["persona_id"]: d for d in by_variant.get(baseline, []) if d.get("persona_id")}
    pairs = []
    for v, ds in by_variant.items():
        if v in (baseline, HUMAN):
            continue
        for d in ds:
            b = base.get(d.get("persona_id"))
            if b is None:
                continue
            side = [{"variant": x["variant"], "turns": [{"role": t["role"], "text": t["text"]} for t in x["turns"]]}
                    for x in (d, b)]
            context = ", ".join(str(x) for x in (d.get("problem_type"), d.get("emotion_type")) if x)
            pairs.append({"pair_id": "eval-" + content_id([d["id"], b["id"]], 12), "a": side[0], "b": side[1],
                          **({"context": context} if context else {})})
    return pairs


# ------------------------------------------------------------------------------------------ variants from params
def plan_variants(cfg: Any) -> tuple[dict[str, Any], dict[str, str], dict[str, str], dict[str, str]]:
    """Which variants run: (active {name: VariantParams}, skipped {name: reason}, local models {name: dir} the
    stage's server must add, fingerprints {name: registry version or folder hash} of the supporter models).

    A `model` variant whose supporter does not resolve (not trained / not registered yet) is skipped with the
    reason, not an error: the teacher-side variants do not wait for the supporter stages."""
    from tasks.common import paths, registry

    active, skipped, local, fps = {}, {}, {}, {}
    for name, v in cfg.variants.items():
        if v.kind == "model":
            try:
                folder = registry.resolve(v.model, must_contain=("config.json", "adapter_config.json"))
                fps[name] = registry.fingerprint(v.model)
            except (registry.RegistryError, OSError) as e:
                skipped[name] = paths.portable_text(f"supporter model {v.model} not available (not trained or not "
                                                    f"registered yet: {str(e).splitlines()[0][:300]})")
                log.warning("evaluate: skipping variant %s: %s", name, skipped[name])
                continue
            ep = cfg.endpoints[v.endpoint]
            if ep.base_url == "local":
                local[ep.model] = str(folder)
        active[name] = v
    return active, skipped, local, fps


def policies_for(active: dict[str, Any], planner: Any | None) -> list[Policy]:
    """The Policy of each active variant: teacher-written kinds use the supporter_teacher role, the others their
    endpoint's role."""
    out = []
    for name, v in active.items():
        role = "supporter_teacher" if v.kind in ("teacher", "planner") else v.endpoint
        out.append(Policy(name, v.kind, v.target_values, v.reference, role,
                          planner if v.kind == "planner" else None))
    return out
