"""The supporter's answer, declared once: four reasoning steps and the reply, in one parseable text.

The supporter (SFT/DPO student) writes exactly this; `esvr chat --show-reasoning`, the evaluation and the
review page parse it back with `parse()`. The teacher's JSON fields (tasks/domain/sim_prompts.TEACHER_SCHEMA) map
one to one, so a teacher turn becomes a training target with `format_answer(**fields)`.

    Issue and state: <the seeker's issue and current emotional state>
    Key content of the reference: <what the reference response offers>
    Adopt the reference: Yes|No - <why>
    Strategy: <one of the 8 ESConv strategies>
    Response: <the reply the seeker sees>

What the supporter reads each turn is declared here too (`supporter_messages`): the dialogue so far as chat turns
(seeker = user, supporter = assistant, its past replies as the seeker saw them), and on the newest seeker turn the
turn's target values and reference response — the inputs the teacher had (tasks/domain/sim_prompts.teacher_messages).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tasks.domain.sim_prompts import SUPPORTER_SYSTEM
from tasks.domain.strategies import STRATEGIES

FORMAT_VERSION = "supporter-format-v1"

LABELS = {
    "issue_and_state": "Issue and state",
    "reference_key_content": "Key content of the reference",
    "adopt": "Adopt the reference",
    "strategy": "Strategy",
    "response": "Response",
}
#: Labels of the per-turn inputs appended to the newest seeker message.
INPUT_LABELS = {"target_values": "Target values", "reference": "Reference response"}
NO_INPUT = "(none)"
FIELDS = ("issue_and_state", "reference_key_content", "adopt_reference", "adopt_reason", "strategy", "response")
_DASH = " - "

_PATTERN = re.compile(
    r"^\s*" + re.escape(LABELS["issue_and_state"]) + r":\s*(?P<issue_and_state>.*?)\s*\n"
    r"\s*" + re.escape(LABELS["reference_key_content"]) + r":\s*(?P<reference_key_content>.*?)\s*\n"
    r"\s*" + re.escape(LABELS["adopt"]) + r":\s*(?P<adopt_reference>Yes|No)\b\s*(?:[-:\u2013\u2014]\s*)?"
    r"(?P<adopt_reason>.*?)\s*\n"
    r"\s*" + re.escape(LABELS["strategy"]) + r":\s*(?P<strategy>[^\n]*?)\s*\n"
    r"\s*" + re.escape(LABELS["response"]) + r":\s*(?P<response>.*?)\s*$",
    re.DOTALL,
)


def _one_line(text: str) -> str:
    """Reasoning fields are single lines in the format: newlines inside them become spaces."""
    return " ".join(str(text).split())


def format_answer(issue_and_state: str, reference_key_content: str, adopt_reference: str, adopt_reason: str,
                  strategy: str, response: str, **_: Any) -> str:
    """The supporter's answer text from the teacher's fields (extra keys, e.g. alternatives, are ignored)."""
    if adopt_reference not in ("Yes", "No"):
        raise ValueError(f"adopt_reference must be 'Yes' or 'No', got {adopt_reference!r}")
    return "\n".join([
        f"{LABELS['issue_and_state']}: {_one_line(issue_and_state)}",
        f"{LABELS['reference_key_content']}: {_one_line(reference_key_content)}",
        f"{LABELS['adopt']}: {adopt_reference}{_DASH}{_one_line(adopt_reason)}",
        f"{LABELS['strategy']}: {_one_line(strategy)}",
        f"{LABELS['response']}: {str(response).strip()}",
    ])


def parse(text: str) -> dict[str, str] | None:
    """The fields of a supporter answer, or None when the text does not follow the format."""
    m = _PATTERN.match(text or "")
    if not m or not m.group("response").strip():
        return None
    return {k: m.group(k).strip() for k in FIELDS}


def response_of(text: str) -> str:
    """What the seeker sees: the Response field of a well-formed answer, else the whole text (a malformed answer
    is shown as it is rather than dropped; callers count malformed answers with `parse`)."""
    fields = parse(text)
    return fields["response"] if fields else (text or "").strip()


def supporter_messages(history: Sequence[tuple[str, str]], target_values: Sequence[str],
                       reference: str | None) -> list[dict[str, str]]:
    """The supporter's prompt for its next turn; `history` ends with the seeker. Without a target value detector
    or reference generator the inputs read `(none)` (the model still answers in the format)."""
    if not history or history[-1][0] != "seeker":
        raise ValueError("supporter_messages: the history must end with a seeker turn")
    msgs = [{"role": "system", "content": SUPPORTER_SYSTEM}]
    msgs += [{"role": "user" if r == "seeker" else "assistant", "content": t.strip()} for r, t in history]
    values = "; ".join(target_values) or NO_INPUT
    ref = _one_line(reference) if reference and reference.strip() else NO_INPUT
    msgs[-1] = {"role": "user", "content": f"{msgs[-1]['content']}\n\n{INPUT_LABELS['target_values']}: {values}\n"
                                            f"{INPUT_LABELS['reference']}: {ref}"}
    return msgs


# ------------------------------------------------------------------------------------------ SFT targets, decoding
#: Reasons written beside an *alternative* response: the teacher wrote one reason, for its own choice, and an
#: alternative of the other choice needs its own (docs/supporter.md: how the adoption rate is set).
ALT_REASONS = {
    "Yes": "building on the reference fits this moment of the conversation",
    "No": "the reference does not fit this moment; a reply of my own fits better",
}
ALT_RESPONSE_FIELD = {"Yes": "alt_response_with_reference", "No": "alt_response_without_reference"}


def answer_variant(turn: dict[str, Any], adopt: str) -> tuple[str, bool]:
    """The teacher turn's answer text for `adopt` ('Yes'/'No'): its own answer when it chose so, else the same
    reasoning with the alternative response and the fixed alternative reason. Returns (text, is_alternative)."""
    if turn["adopt_reference"] == adopt:
        return format_answer(**turn), False
    fields = {**turn, "adopt_reference": adopt, "adopt_reason": ALT_REASONS[adopt],
              "response": turn[ALT_RESPONSE_FIELD[adopt]]}
    return format_answer(**fields), True


def answer_regex(max_chars: int | None = None, response_chars: int | None = None) -> str:
    """Regex of a well-formed answer, for constrained decoding (vLLM `structured_outputs`, `esvr serve`): the five
    labelled lines, Yes/No, one of the 8 strategies. Bounded line lengths make a tiny random model stop."""
    def line(n: int | None) -> str:
        return f"[^\\n]{{1,{n}}}" if n else "[^\\n]+"

    free, resp = line(max_chars), line(response_chars)
    strategies = "|".join(re.escape(s) for s in STRATEGIES)
    return (f"{LABELS['issue_and_state']}: {free}\n{LABELS['reference_key_content']}: {free}\n"
            f"{LABELS['adopt']}: (Yes|No){_DASH}{free}\n{LABELS['strategy']}: ({strategies})\n"
            f"{LABELS['response']}: {resp}")
