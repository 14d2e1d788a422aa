"""ESConv's file format, read once: conversations of train/valid/test.json, the seeker's survey intensities and its
turns (label spellings vary between files: `usr`/`seeker`/`user`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SPLITS = ("train.json", "valid.json", "test.json")
SEEKER = {"usr", "seeker", "user"}


def read_dir(folder: str | Path) -> list[dict[str, Any]]:
    """Conversations of ESConv's train/valid/test.json (JSON lines, or one JSON array per file)."""
    folder = Path(folder)
    convs: list[dict[str, Any]] = []
    missing = [s for s in SPLITS if not (folder / s).is_file()]
    if len(missing) == len(SPLITS):
        raise FileNotFoundError(f"{folder}: none of {SPLITS}; pass the folder that holds ESConv's split files")
    for s in SPLITS:
        p = folder / s
        if not p.is_file():
            log.warning("%s: missing, reading the other splits", p)
            continue
        raw = p.read_bytes().strip()
        if raw.startswith(b"["):
            convs += orjson.loads(raw)
            continue
        for i, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    convs.append(orjson.loads(line))
                except orjson.JSONDecodeError as e:
                    raise ValueError(f"{p}:{i}: malformed JSON line: {e}") from None
    return convs


def _intensity(v: Any) -> int | None:
    try:
        x = int(str(v).strip())
    except (TypeError, ValueError):
        return None
    return x if 1 <= x <= 5 else None


def intensities(conv: dict[str, Any]) -> tuple[int | None, int | None]:
    """(initial, final) seeker emotion intensity from the survey (strings in the files; None when absent)."""
    seeker = (conv.get("survey_score") or {}).get("seeker") or {}
    return _intensity(seeker.get("initial_emotion_intensity")), _intensity(seeker.get("final_emotion_intensity"))


def seeker_turns(conv: dict[str, Any]) -> list[str]:
    """Texts of the seeker's non-empty turns, in order."""
    turns = [t.get("text", "") for t in conv.get("dialog", []) if str(t.get("speaker", "")).lower() in SEEKER]
    return [t for t in turns if isinstance(t, str) and t.strip()]
