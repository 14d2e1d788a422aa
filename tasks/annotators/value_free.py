"""Value-free examples: real conversational texts that express no value, by one documented rule.

Why: the value detector learns from Touché23 *arguments*, every one of which carries at least one value, so it has
never seen a text without one and assigns values to anything ("thanks!", "ok lol", the empty string). Value-free
rows (all 20 labels 0) in training and in the set that chooses the thresholds teach it, and its thresholds, that
small talk and routine remarks express nothing.

The rule (`RULE_VERSION`), applied to three real sources in the mirror:

1. `goemotions_short`: GoEmotions *train* comments of at most `short_max_words` words — back-channels, thanks,
   laughter, short questions and reactions ("Thank you!!", "Yup. Lol", "What did he say?"). GoEmotions dev is not
   used (the emotion model reports on it).
2. `claff_routine`: CL-Aff (r/offmychest, r/CasualConversation) training sentences that its annotators marked with
   no emotional disclosure, no information disclosure and no support — "general or routine information without
   personal references" ("Hotel with AC for $30 per night."), at most 300 characters.
3. `goemotions_neutral`: GoEmotions *train* comments whose only label is `neutral`, longer than `short_max_words`
   and at most `neutral_max_words` words, that are impersonal statements — no first/second person, no obligation
   word (should, must, need, deserve), no placeholder, no question or exclamation mark ("No usable cure was found
   for TB until 1945."). Why: the first two sources are conversational, so a detector calibrated on them still
   gave plain statements of fact 3.4 values each (presence_eval.FACTUAL_PROBES); this is the closest the mirror
   comes to the factual register. It is noisier (a neutral comment can still argue), so it is one source of three.

From all three, a text is dropped when it *names* a value — one of its words (5+ letters) starts with the first five
letters of a 5+-letter word of a Touché level-1 value name ("freedom", "privacy", "pleasure", "success", "wealth",
"health", "family", "honest", "loyalty", "equality", "nature", ...) — or when its normalised form is one of the
presence probes (`tasks.annotators.presence_eval`), which are reported and so must not be trained on. Texts are
de-duplicated by normalised form. A content hash of (seed, normalised text) orders the pool; the first
`value_free_train` go to training, the next ones to the threshold-choosing set, the rest (up to
`value_free_report`) are held back for the report. No ESConv text is used: ESConv is where the presence figures
and the paper's analysis are measured.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.common.hashing import content_id
from tasks.domain.taxonomy import LEVEL1, VALUE_CATEGORIES

#: Bump when the rule changes (it is part of the detector's metadata and of this module's hash in dvc.yaml deps).
#: v2: the `goemotions_neutral` source.
RULE_VERSION = "value-free-v2"
SOURCES = ("goemotions_short", "claff_routine", "goemotions_neutral")
STEM = 5  # letters compared between a text's words and the value-name words

_WORD = re.compile(r"[a-z]+")
_MOJIBAKE = re.compile(r"<U\+([0-9A-Fa-f]{4})>")
#: CL-Aff rows are sentences; a few long rows are moderator boilerplate with links, not conversation.
MAX_SENTENCE_CHARS = 300


def _unmojibake(text: str) -> str:
    """CL-Aff writes some characters as `<U+0092>`: code points below 256 are Windows-1252 bytes (’ “ ” …)."""

    def char(m: re.Match[str]) -> str:
        n = int(m.group(1), 16)
        return bytes([n]).decode("cp1252", errors="replace") if n < 256 else chr(n)

    return _MOJIBAKE.sub(char, text)


def normalise(text: str) -> str:
    """Lower-case words only: the key for de-duplication and for keeping the probes out of training."""
    return " ".join(_WORD.findall(str(text).lower()))


def value_stems() -> frozenset[str]:
    """First letters of every 5+-letter word of the 54 level-1 value names (tasks.domain.taxonomy.LEVEL1)."""
    words = {w for names in LEVEL1.values() for n in names for w in _WORD.findall(n.lower())}
    return frozenset(w[:STEM] for w in words if len(w) >= STEM)


def names_a_value(text: str, stems: frozenset[str]) -> bool:
    return any(len(w) >= STEM and w[:STEM] in stems for w in _WORD.findall(text.lower()))


def read_goemotions_short(train_tsv: str | Path, max_words: int) -> list[str]:
    """GoEmotions train comments with at most `max_words` whitespace-separated words (any emotion label)."""
    out = []
    with open(train_tsv, encoding="utf-8", newline="") as f:
        for line, r in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not r:
                raise ValueError(f"{train_tsv}:{line}: empty row")
            if 0 < len(r[0].split()) <= max_words:
                out.append(r[0])
    return out


NEUTRAL = "27"  # GoEmotions' label id of `neutral` (emotions.txt, line 28)
#: First/second person, obligation and placeholders: a neutral comment with one of them addresses or judges
#: someone ("you should ...", "we need ..."), which is where values live; impersonal statements remain.
_PERSONAL = re.compile(r"\b(i|me|my|mine|myself|you|your|yours|yourself|u|ur|we|us|our|ours|im|let's|should|"
                       r"shouldn't|must|ought|need|needs|deserve|deserves)\b|\[[A-Z]+\]|[?!]", re.I)


def read_goemotions_neutral(train_tsv: str | Path, min_words: int, max_words: int) -> list[str]:
    """GoEmotions train comments whose only label is `neutral`, of min_words..max_words words, that are impersonal
    statements (no first/second person, obligation word, placeholder, question or exclamation): the closest the
    mirror has to the plain factual register ("No usable cure was found for TB until 1945.")."""
    out = []
    with open(train_tsv, encoding="utf-8", newline="") as f:
        for line, r in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(r) < 2:
                raise ValueError(f"{train_tsv}:{line}: expected text<TAB>labels, got {len(r)} column(s)")
            if r[1] == NEUTRAL and min_words <= len(r[0].split()) <= max_words and not _PERSONAL.search(r[0]):
                out.append(r[0])
    return out


CLAFF_ZERO = ("Emotional_disclosure", "Information_disclosure", "Support")


def read_claff_routine(training_csv: str | Path) -> list[str]:
    """CL-Aff training sentences (<= MAX_SENTENCE_CHARS) with no emotional/information disclosure and no support."""
    out = []
    with open(training_csv, encoding="utf-8", errors="replace", newline="") as f:
        rows = csv.DictReader(f)
        missing = [c for c in ("full_text", *CLAFF_ZERO) if c not in (rows.fieldnames or [])]
        if missing:
            raise ValueError(f"{training_csv}: missing columns {missing} (expected CL-Aff labeled_training_set.csv)")
        for r in rows:
            text = _unmojibake(r["full_text"]).strip()
            if all(r[c].strip() == "0" for c in CLAFF_ZERO) and text and len(text) <= MAX_SENTENCE_CHARS:
                out.append(text)
    return out


@dataclass
class ValueFreePool:
    """Value-free texts split into train / choose / report, with the counts that explain the rule's effect."""

    train: list[str]
    choose: list[str]
    report: list[str]
    counts: dict[str, int]


def build_pool(texts_by_source: dict[str, Iterable[str]], exclude: Iterable[str], seed: int, n_train: int,
               n_choose: int, n_report: int) -> ValueFreePool:
    """Apply the rule to candidate texts per source (pure: no files). `exclude`: texts whose normalised form must
    stay out (the probes)."""
    stems = value_stems()
    banned = {normalise(t) for t in exclude}
    seen: set[str] = set()
    pool: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    for source, texts in texts_by_source.items():
        if source not in SOURCES:
            raise ValueError(f"unknown value-free source {source!r}; known: {list(SOURCES)}")
        n = kept = named = probe = dup = 0
        for t in texts:
            n += 1
            key = normalise(t)
            if not key or key in banned:
                probe += 1
                continue
            if names_a_value(t, stems):
                named += 1
                continue
            if key in seen:
                dup += 1
                continue
            seen.add(key)
            kept += 1
            pool.append((content_id([seed, RULE_VERSION, key]), t))
        counts.update({f"{source}.read": n, f"{source}.kept": kept, f"{source}.names_a_value": named,
                       f"{source}.probe_or_empty": probe, f"{source}.duplicate": dup})
    pool.sort()
    texts = [t for _, t in pool]
    train, choose = texts[:n_train], texts[n_train:n_train + n_choose]
    report = texts[n_train + n_choose:n_train + n_choose + n_report]
    counts.update({"pool": len(texts), "train": len(train), "choose": len(choose), "report": len(report)})
    return ValueFreePool(train, choose, report, counts)


def load_pool(cfg: Any, goemotions_dir: Path, claff_dir: Path, exclude: Iterable[str], seed: int,
              n_choose: int) -> ValueFreePool:
    """The pool from the staged files for `value_detector.presence` params (`cfg`)."""
    readers = {"goemotions_short": lambda: read_goemotions_short(goemotions_dir / "train.tsv", cfg.short_max_words),
               "claff_routine": lambda: read_claff_routine(claff_dir / "labeled_training_set.csv"),
               "goemotions_neutral": lambda: read_goemotions_neutral(goemotions_dir / "train.tsv",
                                                                     cfg.short_max_words + 1, cfg.neutral_max_words)}
    return build_pool({s: readers[s]() for s in cfg.value_free_sources}, exclude, seed, cfg.value_free_train,
                      n_choose, cfg.value_free_report)


def zeros(n: int) -> np.ndarray:
    return np.zeros((n, len(VALUE_CATEGORIES)), dtype=np.float32)
