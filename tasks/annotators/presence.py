"""The value-presence rule, declared once: which of the 20 categories a text *expresses*.

Every consumer that counts values uses this module — TVD labels and RG pair filtering (datasets), the ESConv
analysis, the RG value-hit rate, `esvr values predict|eval`, the supporter's value reward (N_{t+k}) and the
evaluation's Seeker-/Supporter-Value — so "a value is present" means the same thing everywhere.

The rule: a text with fewer than `min_chars` non-space characters expresses no value (the detector's probabilities
on empty or near-empty inputs are its prior, not evidence); a text whose most probable category stays below
`min_top` expresses no value (the text-level gate); otherwise category c is present when its probability reaches
`thresholds[c]`.

Why a gate beside the cuts: the cuts maximise F1 on arguments, where every text carries ~3 values, so they are low
(~0.2) and fire on any text that merely *sounds* like an argument — a factual news sentence about a budget or a
bridge gets 5–8 categories. The gate asks first whether the text carries a value at all, at a level set by the
texts known to carry one: `min_top` is the `gate_quantile` quantile of the top probability over the choose set's
validation arguments (at 5 %, at most 1 argument in 20 loses its values), not by the value-free texts, which sit far
below any sensible cut (median top probability ~0.04) and so cannot place it. The profiles set `gate_quantile: 0`
(no gate): measured on the tiny build, a 5 % gate cleaned factual sentences but cut Reddit utterances with any
value to ~15 % (the detector is less confident on conversation than on arguments), leaving 4 TVD examples.

How the cuts are calibrated (tasks/annotators/stage.py `run_train`, docs/ANNOTATORS.md): the detector trains on
Touché23 arguments plus value-free conversational texts (tasks/annotators/value_free.py; all labels 0), and the cuts
maximise the official Touché F1 on a *choose* set = part of Touché validation + value-free texts, so a cut that
fires on small talk pays for it in precision. Another part of validation, other value-free texts, the probes, FULCRA
and ESConv are held back and only report (tasks/annotators/presence_eval.py). The rule is written beside the detector
as `presence.json` by the stage that trains it; a folder without one falls back to its `thresholds.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    #: How the cuts were chosen (sets, sizes, objective); recorded in presence.json, not part of the rule itself.
    calibration: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: The text-level gate: no value unless the text's highest category probability reaches it (0 = no gate).
    min_top: float = 0.0

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"presence rule: {len(self.thresholds)} thresholds for {len(self.labels)} labels")

    @classmethod
    def uniform(cls, threshold: float, min_chars: int = DEFAULT_MIN_CHARS) -> PresenceRule:
        """One cut for every category (the `--threshold` of the reward command)."""
        return cls(tuple([float(threshold)] * len(VALUE_CATEGORIES)), min_chars)

    def present_probs(self, probs: np.ndarray) -> np.ndarray:
        """Boolean (n, 20): probability at or above the category's cut, in texts whose top probability reaches the
        gate (no length rule: probabilities only)."""
        p = np.asarray(probs, dtype=np.float64)
        mask = p >= np.asarray(self.thresholds)[None, :]
        if self.min_top > 0 and len(p):
            mask &= (p.max(axis=1) >= self.min_top)[:, None]
        return mask

    def present(self, texts: Sequence[str], probs: np.ndarray) -> np.ndarray:
        """Boolean (n, 20) for texts and their detector probabilities."""
        mask = self.present_probs(probs)
        if len(texts) != len(mask):
            raise ValueError(f"presence rule: {len(texts)} texts for {len(mask)} probability rows")
        mask[self.short(texts)] = False
        return mask

    def values(self, texts: Sequence[str], probs: np.ndarray) -> list[list[str]]:
        """Present category names per text, in the taxonomy's order."""
        return [[self.labels[j] for j in np.flatnonzero(row)] for row in self.present(texts, probs)]

    def to_dict(self) -> dict[str, Any]:
        out = {"labels": list(self.labels), "thresholds": [round(float(t), 6) for t in self.thresholds],
               "min_chars": self.min_chars, "min_top": round(float(self.min_top), 6)}
        if self.calibration:
            out["calibration"] = self.calibration
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PresenceRule:
        labels = tuple(d.get("labels", VALUE_CATEGORIES))
        if labels != VALUE_CATEGORIES:
            raise ValueError(f"presence rule: labels must be the 20 categories in taxonomy order, got {list(labels)}")
        th = d["thresholds"]
        if isinstance(th, dict):
            th = [th[c] for c in labels]
        return cls(tuple(float(x) for x in th), int(d.get("min_chars", DEFAULT_MIN_CHARS)), labels,
                   dict(d.get("calibration") or {}), float(d.get("min_top", 0.0)))

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

    def short(self, texts: Sequence[str]) -> np.ndarray:
        """Boolean (n,): texts below the length floor (no value whatever the detector says)."""
        return np.array([len("".join(str(t).split())) < self.min_chars for t in texts], dtype=bool)


class ValueDetector:
    """The value detector with its presence rule: probabilities and present values for raw texts."""

    def __init__(self, model: Any, rule: PresenceRule):
        self.model, self.rule = model, rule

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.predict_proba(list(texts), batch_size=64, max_tokens=8192))

    def mask(self, texts: Sequence[str]) -> np.ndarray:
        """Boolean (n, 20) of the values present in each text."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.rule.labels)), dtype=bool)
        return self.rule.present(texts, self.probs(texts))

    def present(self, texts: Sequence[str]) -> list[list[str]]:
        texts = list(texts)
        return self.rule.values(texts, self.probs(texts)) if texts else []


def load_detector(uri: str | Path) -> ValueDetector:
    """A value detector from a folder or registry URI (tasks.common.registry), with the rule it ships."""
    from tasks.annotators.classifier import load_annotator

    model, _, _, folder = load_annotator(uri)
    return ValueDetector(model, PresenceRule.from_folder(folder))
