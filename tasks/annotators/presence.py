"""The value-presence rule, declared once: which of the 20 categories a text *expresses*.

Every consumer that counts values uses this module — TVD labels and RG pair filtering (datasets), the ESConv
analysis, the supporter's value reward (N_{t+k}) and the evaluation's Seeker-/Supporter-Value — so "a value is
present" means the same thing everywhere.

The rule: a text with fewer than `min_chars` non-space characters expresses no value (the detector's probabilities
on empty or near-empty inputs are its prior, not evidence); otherwise category c is present when its probability
reaches `thresholds[c]`. The thresholds live beside the detector (`presence.json` in its folder, written by the
stage that trains it; `thresholds.json`, the validation-chosen classification thresholds, is the fallback).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.domain.taxonomy import VALUE_CATEGORIES

PRESENCE_FILE = "presence.json"
FALLBACK_FILE = "thresholds.json"
DEFAULT_MIN_CHARS = 3


@dataclass(frozen=True)
class PresenceRule:
    """Per-category probability cuts and the minimum text length below which nothing is present."""

    thresholds: tuple[float, ...]
    min_chars: int = DEFAULT_MIN_CHARS
    labels: tuple[str, ...] = VALUE_CATEGORIES

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"presence rule: {len(self.thresholds)} thresholds for {len(self.labels)} labels")

    @classmethod
    def uniform(cls, threshold: float, min_chars: int = DEFAULT_MIN_CHARS) -> PresenceRule:
        """One cut for every category (the `--threshold` of the reward command)."""
        return cls(tuple([float(threshold)] * len(VALUE_CATEGORIES)), min_chars)

    def present_probs(self, probs: np.ndarray) -> np.ndarray:
        """Boolean (n, 20): probability at or above the category's cut (no text rule: probabilities only)."""
        return np.asarray(probs, dtype=np.float64) >= np.asarray(self.thresholds)[None, :]

    def present(self, texts: Sequence[str], probs: np.ndarray) -> np.ndarray:
        """Boolean (n, 20) for texts and their detector probabilities."""
        mask = self.present_probs(probs)
        short = np.array([len("".join(str(t).split())) < self.min_chars for t in texts], dtype=bool)
        mask[short] = False
        return mask

    def values(self, texts: Sequence[str], probs: np.ndarray) -> list[list[str]]:
        """Present category names per text, in the taxonomy's order."""
        return [[self.labels[j] for j in np.flatnonzero(row)] for row in self.present(texts, probs)]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "thresholds": [round(float(t), 6) for t in self.thresholds],
                "min_chars": self.min_chars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PresenceRule:
        labels = tuple(d.get("labels", VALUE_CATEGORIES))
        th = d["thresholds"]
        if isinstance(th, dict):
            th = [th[c] for c in labels]
        return cls(tuple(float(x) for x in th), int(d.get("min_chars", DEFAULT_MIN_CHARS)), labels)

    @classmethod
    def from_folder(cls, folder: str | Path) -> PresenceRule:
        """The rule shipped with a value-detector folder (presence.json, else its classification thresholds)."""
        folder = Path(folder)
        if (folder / PRESENCE_FILE).is_file():
            return cls.from_dict(json.loads((folder / PRESENCE_FILE).read_text(encoding="utf-8")))
        if (folder / FALLBACK_FILE).is_file():
            d = json.loads((folder / FALLBACK_FILE).read_text(encoding="utf-8"))
            return cls.from_dict(d if "thresholds" in d else {"thresholds": d})
        raise FileNotFoundError(f"{folder}: neither {PRESENCE_FILE} nor {FALLBACK_FILE}; is this a value detector?")

    def save(self, folder: str | Path) -> None:
        (Path(folder) / PRESENCE_FILE).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")


class ValueDetector:
    """The value detector with its presence rule: probabilities and present values for raw texts."""

    def __init__(self, model: Any, rule: PresenceRule):
        self.model, self.rule = model, rule

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.predict_proba(list(texts)))

    def present(self, texts: Sequence[str]) -> list[list[str]]:
        texts = list(texts)
        return self.rule.values(texts, self.probs(texts)) if texts else []


def load_detector(uri: str | Path) -> ValueDetector:
    """A value detector from a folder or registry URI (tasks.common.registry), with the rule it ships."""
    from tasks.annotators.classifier import load_annotator

    model, _, _, folder = load_annotator(uri)
    return ValueDetector(model, PresenceRule.from_folder(folder))
