"""Prompts and JSON schemas of the simulation roles: persona writer, seeker, supporter teacher.

TVD and reference-generator prompts are not here: they come from `tasks.domain.prompts` (shared with the datasets and
training stages, so the served TVD/RG see exactly the format they were trained on). Every answer that is parsed has
a JSON schema below (sent as `response_format`), all properties required and no extra ones (OpenAI strict mode).
Change any wording together with SIM_PROMPT_VERSION (it is part of dialogue ids, hence of every cache key).
"""

from __future__ import annotations

import re
from typing import Any

from tasks.domain.prompts import TVD_K, render_history
from tasks.domain.strategies import STRATEGIES, STRATEGY_HINTS
from tasks.domain.taxonomy import VALUE_CATEGORIES

SIM_PROMPT_VERSION = "sim-v2"  # v2: no free `response` (it is the alternative adopt_reference names); seeker may not end early

INTENSITIES = [1, 2, 3, 4, 5]


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


_STR: dict[str, Any] = {"type": "string"}


# ------------------------------------------------------------------------------------------ persona writer
def persona_schema(problem_types: list[str], emotion_types: list[str]) -> dict[str, Any]:
    return _obj({"problem_type": {"type": "string", "enum": problem_types},
                 "emotion_type": {"type": "string", "enum": emotion_types},
                 "initial_intensity": {"type": "integer", "enum": INTENSITIES},
                 "context": _STR})


PERSONA_SYSTEM = (
    "You write seeker personas for simulated emotional-support conversations. From a seed situation, write a "
    "persona: who the person is (age, occupation, circumstances), what happened, what they feel and why, and what "
    "they only reveal when asked. Write the context in the second person ('You are ...'), 80-150 words, concrete, "
    "with no names of real people. Choose the problem type and emotion type from the allowed lists, and the initial "
    "emotion intensity from 1 (mild) to 5 (overwhelming). Answer with the JSON object only."
)


def persona_messages(seed_text: str, hint: dict[str, Any] | None) -> list[dict[str, str]]:
    known = ""
    if hint:
        known = (f"\nKnown facts to keep: problem type {hint['problem_type']}, emotion {hint['emotion_type']}, "
                 f"initial intensity {hint['initial_intensity']}.")
    return [{"role": "system", "content": PERSONA_SYSTEM},
            {"role": "user", "content": f"Seed situation:\n{seed_text.strip()}{known}"}]


# ------------------------------------------------------------------------------------------ seeker
SEEKER_SCHEMA = _obj({"utterance": _STR, "emotion_intensity": {"type": "integer", "enum": INTENSITIES},
                      "end_conversation": {"type": "boolean"}})


def seeker_schema(may_end: bool) -> dict[str, Any]:
    """The seeker's schema; before `simulate.min_turns` supporter turns it has no `end_conversation` field (the
    caller records false), so a recorded `end` always means the dialogue ended there: decoding cannot ask to leave
    when leaving is not allowed. (Not an `enum: [false]`: lm-format-enforcer renders that enum as Python's `False`,
    which is not JSON.)"""
    if may_end:
        return SEEKER_SCHEMA
    return _obj({k: v for k, v in SEEKER_SCHEMA["properties"].items() if k != "end_conversation"})


def seeker_system(persona: dict[str, Any]) -> str:
    return (
        "You play a person who came to an online peer-support chat. Stay in character; never say you are an AI.\n"
        f"Your persona: {persona['context'].strip()}\n"
        f"Problem type: {persona['problem_type']}. Main emotion: {persona['emotion_type']}. Your emotion intensity "
        f"at the start is {persona['initial_intensity']} on a 1-5 scale.\n"
        "Reveal your problem gradually: begin vaguely, share details only when the supporter earns your trust or asks. "
        "Keep each message to 1-3 sentences. After each message report your current emotion intensity (1 = calm, "
        "5 = overwhelmed): it goes down only when the supporter genuinely helps. Set end_conversation to true only "
        "when you feel ready to leave or the conversation stops helping. Answer with the JSON object only."
    )


def seeker_messages(persona: dict[str, Any], history: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The seeker sees itself as the assistant and the supporter as the user."""
    msgs = [{"role": "system", "content": seeker_system(persona)}]
    if not history:
        msgs.append({"role": "user", "content": "(A supporter has joined the chat.) Hi, what brings you here today?"})
    for role, text in history:
        msgs.append({"role": "assistant" if role == "seeker" else "user", "content": text})
    return msgs


# ------------------------------------------------------------------------------------------ supporter teacher
def teacher_schema(reference: bool = True, alternatives: bool = True,
                   strategies: tuple[str, ...] = STRATEGIES) -> dict[str, Any]:
    """The teacher's answer fields; without a reference the reference steps (and alternatives) are left out, and a
    planner that fixed the strategy passes that one strategy as the only allowed value.

    With the reference and the alternatives (simulation) there is no free `response` field: the reply the seeker sees
    is the alternative that `adopt_reference` names (`teacher_response`), so a turn's response and its adoption
    decision agree by construction, whatever the model. Otherwise the teacher writes its one `response`."""
    props: dict[str, Any] = {"issue_and_state": _STR}
    if reference:
        props.update(reference_key_content=_STR, adopt_reference={"type": "string", "enum": ["Yes", "No"]},
                     adopt_reason=_STR)
    props.update(strategy={"type": "string", "enum": list(strategies)})
    if reference and alternatives:
        props.update(alt_response_with_reference=_STR, alt_response_without_reference=_STR)
    else:
        props.update(response=_STR)
    return _obj(props)


def teacher_response(turn: dict[str, Any]) -> str:
    """The reply the seeker sees: the teacher's `response` where it wrote one; in simulation the alternative that
    builds on the reference when it is adopted, else the other."""
    if "alt_response_with_reference" not in turn:
        return str(turn["response"]).strip()
    key = "alt_response_with_reference" if turn["adopt_reference"] == "Yes" else "alt_response_without_reference"
    return str(turn[key]).strip()


def teacher_system(target_values: bool = True, reference: bool = True, alternatives: bool = True,
                   strategy: str | None = None) -> str:
    """The teacher's instructions for what it is shown: target values and/or a reference, a planned strategy, and
    whether it writes the two alternative responses (simulation) or only its reply (evaluation)."""
    steps = ["issue_and_state: the seeker's issue and current emotional state, in one or two sentences."]
    if reference:
        written_for = " written for these target values" if target_values else ""
        steps += [f"reference_key_content: the key content of the reference response{written_for}.",
                  "adopt_reference: 'Yes' if building on the reference fits this moment of the conversation, else "
                  "'No'; adopt_reason: why."]
    if strategy is None:
        steps.append("strategy: one of these ESConv strategies -\n"
                     + "\n".join(f"   - {k}: {v}" for k, v in STRATEGY_HINTS.items()))
    else:
        steps.append(f"strategy: {strategy} (chosen for this turn by a strategy planner: {STRATEGY_HINTS[strategy]}).")
    count = {1: "one step", 2: "two steps", 3: "three steps", 4: "four steps"}[len(steps)]
    text = ("You are an expert emotional-support counsellor. Your next reply should help the seeker feel better and "
            f"recognise and act on their positive values. Reason in {count}, then reply:\n"
            + "".join(f"{i}. {s}\n" for i, s in enumerate(steps, 1)))
    if reference and alternatives:
        text += ("Then write your reply to the seeker (1-3 sentences, warm, specific, no lists) twice: "
                 "alt_response_with_reference builds on the reference, alt_response_without_reference ignores it. "
                 "The seeker receives the one your adopt_reference decision names. ")
    else:
        text += "response: your reply to the seeker (1-3 sentences, warm, specific, no lists).\n"
    return text + "Answer with the JSON object only."


TEACHER_SCHEMA = teacher_schema()
TEACHER_SYSTEM = teacher_system()


def teacher_messages(history: list[tuple[str, str]], target_values: list[str] | None, reference: str | None,
                     system: str = TEACHER_SYSTEM) -> list[dict[str, str]]:
    """The teacher's prompt: the conversation, then the target values and the reference when it is shown them."""
    shown = []
    if target_values is not None:
        shown.append(f"Target values: {'; '.join(target_values)}")
    if reference is not None:
        shown.append(f"Reference response: {reference.strip()}")
    user = f"Conversation so far:\n{render_history(history)}" + ("\n\n" + "\n".join(shown) if shown else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


#: The supporter system prompt of the SFT conversations (the student sees this, not the teacher's).
SUPPORTER_SYSTEM = (
    "You are a caring emotional-support companion. Understand the seeker's issue and feelings, and help them "
    "recognise and act on their positive values."
)


# ------------------------------------------------------------------------------------------ TVD constraint
def tvd_regex(k: int = TVD_K, fixed: tuple[str, ...] | list[str] = ()) -> str:
    """Regex of a TVD answer ('Values: A; B; C'), sent as vLLM-style structured_outputs so decoding cannot drift.

    `fixed`: categories already chosen; they are written as literals and the remaining slots may only name the
    other categories. Resampling a repeated slot this way keeps the distinct ones and decodes (greedily, like the
    first answer) only what repeated; a regex cannot say "distinct" without listing 20x19x18 triples."""
    fixed = list(fixed)[:k]
    rest = [v for v in VALUE_CATEGORIES if v not in fixed]
    alt = "(" + "|".join(re.escape(v) for v in rest) + ")"
    return "Values: " + "; ".join([re.escape(v) for v in fixed] + [alt] * (k - len(fixed)))
