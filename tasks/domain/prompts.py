"""The single place that turns a seeker–supporter history into chat messages, for every model that reads one.

Datasets (`tasks/datasets.py`), training and inference (serve, simulate) all import from here, so a prompt is
formatted identically wherever it is built. Change the wording only together with `PROMPT_VERSION` (it is part of
every cache key and dataset card built from these prompts).

* History: a sequence of `(role, text)` pairs, role "seeker" (the Reddit OP) or "supporter" (the commenter), oldest
  first. It is rendered as one transcript inside a single user message, so chat templates that insist on
  alternating user/assistant turns accept it and SFT loss falls only on the final assistant reply.
* TVD (target value detector): `tvd_messages(history)` → the model answers `Values: A; B; C` (3 distinct
  category names of `tasks.domain.taxonomy.VALUE_CATEGORIES`); `format_tvd_answer` writes it, `parse_tvd_answer` reads it.
* RG (reference generator): `rg_prompt(history, target_values)` → the model answers with the supporter's next reply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from tasks.domain.taxonomy import N_VALUES, VALUE_CATEGORIES, VALUE_INDEX, validate_categories

#: Bump when any wording below changes: datasets, caches and cards record it.
PROMPT_VERSION = "v1"

Role = Literal["seeker", "supporter"]
Message = dict[str, str]
History = Sequence[tuple[str, str]]

ROLES: tuple[str, str] = ("seeker", "supporter")
#: How each role is named inside the transcript.
ROLE_LABELS: dict[str, str] = {"seeker": "Seeker", "supporter": "Supporter"}

#: Number of target values a TVD answer names (the paper's top-3).
TVD_K = 3
TVD_PREFIX = "Values:"
TVD_SEPARATOR = "; "

TVD_SYSTEM = (
    "You read an emotional-support conversation and predict which human values the seeker should be helped to "
    f"express next. Answer with exactly one line: '{TVD_PREFIX} A; B; C', naming {TVD_K} different value categories."
)
RG_SYSTEM = (
    "You are a caring peer supporter replying to someone who shared something difficult. Write your next reply "
    "so that it helps them recognise and act on the given values. Reply with the message only."
)

# Lower-cased, punctuation-light keys so a model's "self direction - thought" still maps to its category.
_NORMALISED = {re.sub(r"[^a-z]+", " ", v.lower()).strip(): v for v in VALUE_CATEGORIES}


def _check_history(history: History) -> list[tuple[str, str]]:
    """Validate roles and texts; returns the history as a list of (role, text)."""
    out = []
    for i, item in enumerate(history):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"history[{i}]: expected a (role, text) pair, got {item!r}")
        role, text = item
        if role not in ROLES:
            raise ValueError(f"history[{i}]: role {role!r} is not one of {ROLES}")
        if not isinstance(text, str):
            raise ValueError(f"history[{i}]: text must be a string, got {type(text).__name__}")
        out.append((role, text))
    if not out:
        raise ValueError("history is empty: a prompt needs at least the seeker's first message")
    return out


def render_history(history: History) -> str:
    """The transcript: one `Seeker: …` / `Supporter: …` block per turn, blank line between turns."""
    turns = _check_history(history)
    return "\n\n".join(f"{ROLE_LABELS[role]}: {text.strip()}" for role, text in turns)


def history_from_messages(messages: Iterable[Message]) -> list[tuple[str, str]]:
    """A history from chat messages where the seeker is `user` and the supporter `assistant` (system ignored)."""
    mapping = {"user": "seeker", "assistant": "supporter", "seeker": "seeker", "supporter": "supporter"}
    out = []
    for i, m in enumerate(messages):
        if m["role"] == "system":
            continue
        if m["role"] not in mapping:
            raise ValueError(f"messages[{i}]: role {m['role']!r} cannot be mapped to seeker/supporter")
        out.append((mapping[m["role"]], m["content"]))
    return out


# ------------------------------------------------------------------------------------------------------ TVD
def tvd_messages(history: History) -> list[Message]:
    """Prompt of the target value detector: system + one user message holding the transcript (ends with the seeker)."""
    transcript = render_history(history)
    user = f"Conversation:\n{transcript}\n\nWhich {TVD_K} values should the seeker be helped to express next?"
    return [{"role": "system", "content": TVD_SYSTEM}, {"role": "user", "content": user}]


def format_tvd_answer(values: Sequence[str]) -> str:
    """`Values: A; B; C` for exactly TVD_K distinct, valid category names (order kept)."""
    values = list(values)
    validate_categories(values, "format_tvd_answer")
    if len(values) != TVD_K or len(set(values)) != TVD_K:
        raise ValueError(f"format_tvd_answer: need {TVD_K} distinct categories, got {values}")
    return f"{TVD_PREFIX} {TVD_SEPARATOR.join(values)}"


def _match_category(token: str) -> str | None:
    key = re.sub(r"[^a-z]+", " ", token.lower()).strip()
    return _NORMALISED.get(key)


def parse_tvd_answer(text: str, k: int = TVD_K) -> list[str] | None:
    """Categories named by a TVD answer, distinct, in order, at most `k`; None when no valid category is found.

    Tolerant of what generators do: text before the `Values:` line, any letter case, `,`/`|`/newline separators
    (only when no `;` is present, since some category names contain none of those), trailing punctuation.
    """
    if not isinstance(text, str):
        return None
    m = re.search(r"values\s*:\s*(.*)", text, flags=re.IGNORECASE | re.DOTALL)
    body = m.group(1) if m else text
    lines = [ln for ln in body.splitlines() if ln.strip()]
    if not lines:
        return None
    # One line answers the question; later lines are a generator rambling on, unless it listed one per line.
    first = lines[0]
    if ";" in first:
        parts = first.split(";")
    elif "," in first or "|" in first:
        parts = re.split(r"[,|]", first)
    else:
        parts = lines[:k]
    found: list[str] = []
    for part in parts:
        cat = _match_category(part.strip().strip(".!").strip())
        if cat is not None and cat not in found:
            found.append(cat)
        if len(found) == k:
            break
    return found or None


def tvd_answer_is_exact(text: str) -> bool:
    """True when `text` is what `format_tvd_answer` writes for its categories, up to letter case and spacing (the
    trained format with nothing around it)."""
    found = parse_tvd_answer(text)
    if not found or len(found) != TVD_K:
        return False
    return " ".join(text.split()).lower() == format_tvd_answer(found).lower()


def tvd_label_vector(values: Sequence[str]) -> list[int]:
    """Multi-hot over the 20 categories (taxonomy order) for a parsed answer, for metrics."""
    vec = [0] * N_VALUES
    for v in values:
        vec[VALUE_INDEX[v]] = 1
    return vec


# ------------------------------------------------------------------------------------------------------ RG
def format_target_values(target_values: Sequence[str]) -> str:
    """Target values as they appear inside the RG prompt."""
    values = list(target_values)
    validate_categories(values, "rg_prompt target_values")
    if not values:
        raise ValueError("rg_prompt: target_values is empty; give at least one category")
    return TVD_SEPARATOR.join(values)


def rg_prompt(history: History, target_values: Sequence[str]) -> list[Message]:
    """Prompt of the reference generator: system + one user message (transcript + target values)."""
    transcript = render_history(history)
    user = (
        f"Conversation:\n{transcript}\n\nTarget values: {format_target_values(target_values)}\n"
        "Write the supporter's next reply."
    )
    return [{"role": "system", "content": RG_SYSTEM}, {"role": "user", "content": user}]


def assistant(text: str) -> Message:
    """One assistant message (the answer half of SFT rows and of DPO chosen/rejected)."""
    return {"role": "assistant", "content": text}


def rg_sft_messages(history: History, target_values: Sequence[str], reply: str) -> list[Message]:
    """A full RG SFT conversation: the RG prompt followed by the supporter's reply."""
    return [*rg_prompt(history, target_values), assistant(reply)]


def tvd_sft_messages(history: History, values: Sequence[str]) -> list[Message]:
    """A full TVD SFT conversation: the TVD prompt followed by the formatted answer."""
    return [*tvd_messages(history), assistant(format_tvd_answer(values))]
