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

SIM_PROMPT_VERSION = "sim-v1"

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
TEACHER_SCHEMA = _obj({
    "issue_and_state": _STR,
    "reference_key_content": _STR,
    "adopt_reference": {"type": "string", "enum": ["Yes", "No"]},
    "adopt_reason": _STR,
    "strategy": {"type": "string", "enum": list(STRATEGIES)},
    "response": _STR,
    "alt_response_with_reference": _STR,
    "alt_response_without_reference": _STR,
})

TEACHER_SYSTEM = (
    "You are an expert emotional-support counsellor. Your next reply should help the seeker feel better and "
    "recognise and act on their positive values. Reason in four steps, then reply:\n"
    "1. issue_and_state: the seeker's issue and current emotional state, in one or two sentences.\n"
    "2. reference_key_content: the key content of the reference response written for these target values.\n"
    "3. adopt_reference: 'Yes' if building on the reference fits this moment of the conversation, else 'No'; "
    "adopt_reason: why.\n"
    "4. strategy: one of these ESConv strategies -\n"
    + "\n".join(f"   - {k}: {v}" for k, v in STRATEGY_HINTS.items())
    + "\nresponse: your reply to the seeker (1-3 sentences, warm, specific, no lists).\n"
    "Also write two alternatives for the same turn: alt_response_with_reference (a reply that does build on the "
    "reference) and alt_response_without_reference (a reply that ignores it). Answer with the JSON object only."
)


def teacher_messages(history: list[tuple[str, str]], target_values: list[str], reference: str) -> list[dict[str, str]]:
    user = (f"Conversation so far:\n{render_history(history)}\n\n"
            f"Target values: {'; '.join(target_values)}\n"
            f"Reference response: {reference.strip()}")
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]


#: The supporter system prompt of the SFT conversations (the student sees this, not the teacher's).
SUPPORTER_SYSTEM = (
    "You are a caring emotional-support companion. Understand the seeker's issue and feelings, and help them "
    "recognise and act on their positive values."
)


# ------------------------------------------------------------------------------------------ TVD constraint
def tvd_regex(k: int = TVD_K) -> str:
    """Regex of a TVD answer ('Values: A; B; C'), sent as vLLM-style structured_outputs so decoding cannot drift."""
    alt = "(" + "|".join(re.escape(v) for v in VALUE_CATEGORIES) + ")"
    return "Values: " + "; ".join([alt] * k)
