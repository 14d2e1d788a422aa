"""ESConv's 8 supporter strategies, declared once (order and spelling of ESConv's strategy.json, brackets dropped),
with the one-line meaning every prompt shows. A unit test holds the names against the staged strategy.json."""

from __future__ import annotations

import json
from pathlib import Path

STRATEGY_HINTS: dict[str, str] = {
    "Question": "ask about the problem so the seeker can put it into words (open questions first)",
    "Restatement or Paraphrasing": "say back what the seeker said, shorter, so they see it more clearly",
    "Reflection of feelings": "name the feelings the seeker seems to have",
    "Self-disclosure": "share a similar experience or feeling to show empathy",
    "Affirmation and Reassurance": "point to the seeker's strengths and effort; encourage",
    "Providing Suggestions": "offer ways to change without dictating",
    "Information": "give facts, resources or answers",
    "Others": "pleasantries and anything else",
}
STRATEGIES: tuple[str, ...] = tuple(STRATEGY_HINTS)

# Spellings found across ESConv's files and its derivatives (DOMAIN.md: Question/Questions, Others/Other).
_VARIANTS = {"questions": "Question", "other": "Others"}


def normalise(label: str) -> str | None:
    """The canonical strategy name of an ESConv label (`[Question]`, `Questions`, `other`, ...), None if unknown."""
    s = label.strip().strip("[]").strip()
    for name in STRATEGIES:
        if s.lower() == name.lower():
            return name
    return _VARIANTS.get(s.lower())


def read_strategy_file(path: str | Path) -> tuple[str, ...]:
    """The strategy names of ESConv's strategy.json (brackets dropped)."""
    return tuple(str(x).strip().strip("[]") for x in json.loads(Path(path).read_text(encoding="utf-8")))
