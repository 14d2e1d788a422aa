"""The review page's input and criteria, declared once (format in docs/review.md).

A pairs file is JSONL, one comparison per line:

    {"pair_id": str, "a": {"variant": str, "turns": [{"role": "seeker"|"supporter", "text": str}, ...]},
                     "b": {...}, "context": str (optional: the seeker's situation, shown above both)}

`user`/`assistant` roles are read as seeker/supporter (chat-format transcripts). The evaluation stage writes such
files from its transcripts; `esvr chat --save` writes turns in the same shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.common.hashing import content_id

#: The paper's therapist criteria (ES-VR §6) plus the overall preference: (key, label, question to the rater).
CRITERIA: tuple[tuple[str, str, str], ...] = (
    ("validating_challenges", "Validating challenges",
     "Which supporter better acknowledges the seeker's difficulties as real and understandable?"),
    ("positive_aspects", "Emphasising positive aspects",
     "Which supporter better brings out the seeker's strengths, values and what is going well?"),
    ("overall", "Overall", "Which supporter would you rather the seeker had talked to?"),
)
CRITERION_KEYS = tuple(k for k, _, _ in CRITERIA)
#: What a rater may answer per criterion, relative to the page they saw.
CHOICES = ("left", "right", "tie")
ROLE_ALIASES = {"seeker": "seeker", "user": "seeker", "supporter": "supporter", "assistant": "supporter"}


class PairsError(ValueError):
    """A pairs file that does not follow the format; the message names file, line and key."""


def _dialogue(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise PairsError(f"{where}: must be an object with variant and turns")
    variant = obj.get("variant")
    if not isinstance(variant, str) or not variant.strip():
        raise PairsError(f"{where}.variant: a non-empty string is required")
    turns = obj.get("turns")
    if not isinstance(turns, list) or not turns:
        raise PairsError(f"{where}.turns: a non-empty list of {{role, text}} is required")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise PairsError(f"{where}.turns[{i}]: must be an object with role and text")
        role = ROLE_ALIASES.get(str(t.get("role", "")).lower())
        if role is None:
            raise PairsError(f"{where}.turns[{i}].role: {t.get('role')!r} is not one of {sorted(ROLE_ALIASES)}")
        if not isinstance(t.get("text"), str):
            raise PairsError(f"{where}.turns[{i}].text: a string is required")
        out.append({"role": role, "text": t["text"]})
    return {"variant": variant.strip(), "turns": out}


def parse_pair(obj: Any, where: str) -> dict[str, Any]:
    """One validated, normalised pair (roles mapped, unknown keys dropped)."""
    if not isinstance(obj, dict):
        raise PairsError(f"{where}: each line must be a JSON object")
    pid = obj.get("pair_id")
    if not isinstance(pid, str | int) or not str(pid).strip():
        raise PairsError(f"{where}: pair_id: a non-empty string is required")
    pair: dict[str, Any] = {"pair_id": str(pid).strip(), "a": _dialogue(obj.get("a"), f"{where}: a"),
            "b": _dialogue(obj.get("b"), f"{where}: b")}
    if pair["a"]["variant"] == pair["b"]["variant"]:
        raise PairsError(f"{where}: a and b are both variant {pair['a']['variant']!r}; a pair compares two variants")
    if obj.get("context") is not None:
        if not isinstance(obj["context"], str):
            raise PairsError(f"{where}: context must be a string")
        pair["context"] = obj["context"]
    return pair


def load_pairs(path: Path) -> list[dict[str, Any]]:
    """Every pair of a JSONL file, validated; duplicate pair ids are an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PairsError(f"{path}: cannot read ({e})") from None
    pairs: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PairsError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        pair = parse_pair(obj, f"{path}:{n}")
        if pair["pair_id"] in seen:
            raise PairsError(f"{path}:{n}: pair_id {pair['pair_id']!r} already on line {seen[pair['pair_id']]}")
        seen[pair["pair_id"]] = n
        pairs.append(pair)
    if not pairs:
        raise PairsError(f"{path}: no pairs")
    return pairs


def pair_hash(pair: dict[str, Any]) -> str:
    """Content hash of what raters see and judge (a changed dialogue under an old id must not inherit verdicts)."""
    return content_id(pair, 16)
