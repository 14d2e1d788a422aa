"""The LLM judge: one call per dimension and dialogue, rationale before score, the score an integer 1-5 that the
JSON schema enforces (an out-of-range or non-integer score fails validation and is re-asked by the LLM layer,
tasks/llm/client.py, which also caches, retries and keeps the ledger).

The judge sees what the seeker saw: the transcript of seeker messages and supporter *responses* (never the
supporter's reasoning, target values or reference). Rubric texts come from params (`evaluate.judge.dimensions`).

Pairwise comparisons ask both orders (A/B, then B/A); a verdict counts only when both orders agree, otherwise it is
a tie — position bias cannot win a comparison.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from tasks.domain.prompts import render_history
from tasks.llm.client import LLM, LLMError, stable_seed

log = logging.getLogger(__name__)

#: Bump with any wording change below (it is inside every judge request, hence every cache key, anyway).
JUDGE_PROMPT_VERSION = "judge-v1"
DIMENSIONS = ("suggestion", "experience", "information", "overall")
SCORES = [1, 2, 3, 4, 5]

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"rationale": {"type": "string"}, "score": {"type": "integer", "enum": SCORES}},
    "required": ["rationale", "score"], "additionalProperties": False,
}
PAIR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"rationale": {"type": "string"}, "winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["rationale", "winner"], "additionalProperties": False,
}


def history_of(dialogue: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) pairs of a contract dialogue: what the seeker saw."""
    return [(t["role"], t["text"]) for t in dialogue["turns"]]


def judge_messages(dimension: str, rubric: str, history: list[tuple[str, str]]) -> list[dict[str, str]]:
    system = (
        "You are an expert evaluator of emotional-support conversations. Rate the supporter on one dimension only: "
        f"{dimension.capitalize()}.\nRubric: {rubric.strip()}\n"
        "Read the whole conversation. First write a brief rationale, then give an integer score from 1 (poor) to 5 "
        "(excellent). Answer with the JSON object only, the rationale before the score."
    )
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Conversation:\n{render_history(history)}"}]


def pair_messages(rubric: str, a: list[tuple[str, str]], b: list[tuple[str, str]]) -> list[dict[str, str]]:
    system = (
        "You are an expert evaluator of emotional-support conversations. Two supporters talked with the same seeker. "
        f"Decide which supporter was better.\nCriterion: {rubric.strip()}\n"
        "First write a brief rationale, then the winner: 'A', 'B', or 'tie'. Answer with the JSON object only."
    )
    user = f"Conversation A:\n{render_history(a)}\n\nConversation B:\n{render_history(b)}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


async def judge_dialogue(llm: LLM, role: str, dialogue: dict[str, Any], rubrics: Mapping[str, str],
                         ) -> dict[str, dict[str, Any]]:
    """{dimension: {"score": int | None, "rationale": str}}; a dimension whose call fails for good has score None
    (counted by the caller) rather than failing the evaluation."""
    history = history_of(dialogue)

    async def one(dim: str) -> tuple[str, dict[str, Any]]:
        try:
            ans = await llm.ask(role, judge_messages(dim, rubrics[dim], history), schema=SCORE_SCHEMA,
                                schema_name=f"judge_{dim}", seed=stable_seed(dialogue["id"], role, dim),
                                tag=dialogue["id"])
        except LLMError as e:
            log.warning("judge %s: %s of dialogue %s failed: %s", role, dim, dialogue["id"], e)
            return dim, {"score": None, "rationale": "", "error": str(e)[:300]}
        return dim, {"score": int(ans["score"]), "rationale": ans["rationale"]}

    return dict(await asyncio.gather(*(one(d) for d in rubrics)))


async def judge_all(llm: LLM, role: str, dialogues: list[dict[str, Any]], rubrics: Mapping[str, str],
                    ) -> list[dict[str, dict[str, Any]]]:
    return list(await asyncio.gather(*(judge_dialogue(llm, role, d, rubrics) for d in dialogues)))


def combine_orders(first: str, second: str) -> str:
    """Verdict of x against y from (x as A, y as B) and (y as A, x as B): 'x', 'y' or 'tie' (disagreement = tie)."""
    if first == "A" and second == "B":
        return "x"
    if first == "B" and second == "A":
        return "y"
    return "tie"


async def compare(llm: LLM, role: str, x: dict[str, Any], y: dict[str, Any], rubric: str) -> dict[str, Any]:
    """x against y in both orders: {"verdict": 'x'|'y'|'tie', "orders": [winner AB, winner BA]}."""
    hx, hy = history_of(x), history_of(y)
    tag = f"{x['id']}~{y['id']}"
    try:
        ab, ba = await asyncio.gather(
            llm.ask(role, pair_messages(rubric, hx, hy), schema=PAIR_SCHEMA, schema_name="pairwise",
                    seed=stable_seed(tag, "ab"), tag=tag),
            llm.ask(role, pair_messages(rubric, hy, hx), schema=PAIR_SCHEMA, schema_name="pairwise",
                    seed=stable_seed(tag, "ba"), tag=tag))
    except LLMError as e:
        log.warning("pairwise %s: %s failed: %s", role, tag, e)
        return {"verdict": None, "orders": [], "error": str(e)[:300]}
    return {"verdict": combine_orders(ab["winner"], ba["winner"]), "orders": [ab["winner"], ba["winner"]]}
