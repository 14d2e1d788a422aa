"""The one supporter policy of the evaluation; every variant is a set of its flags (params `evaluate.variants`).

Per supporter turn, with `history` so far:

1. target values: the TVD (`tvd` role), when the policy shows them or needs them for the reference;
2. reference: the RG (`rg` role) writes one for those target values, when the policy shows a reference;
3. the reply, by `kind`:
   * `teacher` — the simulation's supporter teacher (tasks/domain/sim_prompts.py: the same instructions and JSON
     schema, minus what it is not shown and minus the alternative responses) reasons and replies;
   * `planner` — as `teacher`, but a strategy classifier trained on ESConv (tasks/evaluate/planner.py) picks the
     strategy first and the schema allows only that one (PPDPP-style);
   * `model` — a trained supporter (issue "Supporter", `models:/supporter@sft|dpo|emotion-dpo`) writes the
     reasoning + reply text of tasks/domain/supporter_format.py, parsed back (a malformed answer is counted and
     shown to the seeker as it is);
   * `endpoint` — any OpenAI-compatible chat model (e.g. Llama-Psych8k on vLLM) gets the conversation as chat turns
     and answers in free text.

The seeker simulator and the dialogue loop are the simulation's (tasks/simulate.converse); only this step differs.
Supporter-side seeds derive from the persona's key, not the variant, so variants share their random numbers too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.domain import prompts, supporter_format
from tasks.domain.sim_prompts import (
    SUPPORTER_SYSTEM,
    teacher_messages,
    teacher_schema,
    teacher_system,
    tvd_regex,
)
from tasks.domain.strategies import STRATEGIES
from tasks.evaluate.planner import StrategyPlanner
from tasks.llm.client import LLM, stable_seed
from tasks.simulate import SupporterStep, check_nonempty, check_reference, check_tvd

KINDS = ("teacher", "planner", "model", "endpoint")


def chat_messages(history: list[tuple[str, str]]) -> list[dict[str, str]]:
    """A plain chat for an outside model: the seeker speaks as `user`, the supporter as `assistant`."""
    return [{"role": "system", "content": SUPPORTER_SYSTEM}] + [
        {"role": "user" if r == "seeker" else "assistant", "content": t} for r, t in history]


@dataclass(frozen=True)
class Policy:
    """One variant: `kind`, what it is shown, and the LLM role that writes its replies."""

    name: str
    kind: str
    target_values: bool
    reference: bool
    role: str
    planner: StrategyPlanner | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"variant {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "planner" and self.planner is None:
            raise ValueError(f"variant {self.name}: a planner variant needs a trained strategy planner")
        if self.kind == "endpoint" and (self.target_values or self.reference):
            raise ValueError(f"variant {self.name}: an endpoint variant answers a plain chat; it cannot be shown "
                             "target values or a reference (set both false)")

    def step(self, llm: LLM, seed_key: str, tag: str) -> SupporterStep:
        """The supporter step of one dialogue (tasks/simulate.converse calls it once per supporter turn)."""

        async def step(history: list[tuple[str, str]], k: int, s: dict[str, Any]) -> dict[str, Any]:
            values = reference = None
            if self.target_values or self.reference:
                values = await llm.ask("tvd", prompts.tvd_messages(history), regex=tvd_regex(), check=check_tvd,
                                       seed=stable_seed(seed_key, "tvd", k), tag=tag)
            if self.reference:
                assert values is not None
                reference = await llm.ask("rg", prompts.rg_prompt(history, values), check=check_reference,
                                          seed=stable_seed(seed_key, "rg", k), tag=tag)
            turn: dict[str, Any] = {"turn": k, "seeker_intensity_before": s["emotion_intensity"],
                                    "target_values": values, "target_values_shown": self.target_values,
                                    "reference": reference}
            shown_values = values if self.target_values else None
            if self.kind in ("teacher", "planner"):
                strategy = self.planner.predict(history) if self.planner is not None else None
                t = await llm.ask(
                    self.role, teacher_messages(history, shown_values, reference,
                                                system=teacher_system(self.target_values, self.reference,
                                                                      alternatives=False, strategy=strategy)),
                    schema=teacher_schema(self.reference, alternatives=False,
                                          strategies=(strategy,) if strategy else STRATEGIES),
                    schema_name="supporter_turn", seed=stable_seed(seed_key, "supporter", k), tag=tag,
                    check=check_nonempty(("response",)))
                turn.update(t, malformed=False, planned_strategy=strategy)
                if self.reference:
                    turn["answer"] = supporter_format.format_answer(**t)
                return turn
            # a trained supporter reads exactly what it was trained on and what `esvr chat` sends it
            msgs = (supporter_format.supporter_messages(history, shown_values or [], reference)
                    if self.kind == "model" else chat_messages(history))
            raw = await llm.ask(self.role, msgs, check=check_reference, seed=stable_seed(seed_key, "supporter", k),
                                tag=tag)
            fields = supporter_format.parse(raw)
            turn.update(fields or {}, answer=raw, response=supporter_format.response_of(raw),
                        malformed=self.kind == "model" and fields is None)
            return turn

        return step
