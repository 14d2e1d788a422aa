"""The supporter's answer, declared once: four reasoning steps and the reply, in one parseable text.

The supporter (SFT/DPO student) writes exactly this; `esvr chat --show-reasoning`, the evaluation and the
review page parse it back with `parse()`. The teacher's JSON fields (tasks/domain/sim_prompts.TEACHER_SCHEMA) map
one to one, so a teacher turn becomes a training target with `format_answer(**fields)`.

    Issue and state: <the seeker's issue and current emotional state>
    Key content of the reference: <what the reference response offers>
    Adopt the reference: Yes|No - <why>
    Strategy: <one of the 8 ESConv strategies>
    Response: <the reply the seeker sees>
"""

from __future__ import annotations

import re
from typing import Any

FORMAT_VERSION = "supporter-format-v1"

LABELS = {
    "issue_and_state": "Issue and state",
    "reference_key_content": "Key content of the reference",
    "adopt": "Adopt the reference",
    "strategy": "Strategy",
    "response": "Response",
}
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
