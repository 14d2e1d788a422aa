"""ESConv conversations as contract dialogues: the human-supporter reference row, on the same scale as the variants.

ESConv turns are utterances (`speaker` usr/sys, supporter utterances labelled with a strategy); consecutive
utterances of one speaker are merged into one turn, so a human dialogue alternates like a simulated one and
"share of turns" means the same thing in both. The survey's initial emotion intensity goes on the first seeker
turn and the final one (missing in ~150 of 1,300 conversations) on the last seeker turn — so Intensity, the value
reported with the last seeker turn, is the final survey score, or null where the survey has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.common.hashing import content_id
from tasks.common.io import read_jsonl
from tasks.domain import strategies
from tasks.esconv_analysis import intensities  # the survey's scores, read one way

SPLIT_FILES = {"train": "train.json", "valid": "valid.json", "test": "test.json"}
_SPEAKERS = {"usr": "seeker", "seeker": "seeker", "user": "seeker", "sys": "supporter", "supporter": "supporter"}


def normalise_strategy(label: Any) -> str | None:
    """One of the 8 ESConv strategies from any of the files' spellings; None for a missing or unknown label."""
    return strategies.normalise(label) if isinstance(label, str) and label.strip() else None


def read_split(folder: str | Path, split: str) -> list[dict[str, Any]]:
    """The conversations of one ESConv split file (JSON lines; a malformed line names file and line)."""
    path = Path(folder) / SPLIT_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ESConv split missing; run the sources stage (`dvc repro sources`)")
    return list(read_jsonl(path))


def to_dialogue(conv: dict[str, Any], source: str) -> dict[str, Any]:
    """One ESConv conversation as a contract dialogue (merged turns, survey intensities, normalised strategies)."""
    turns: list[dict[str, Any]] = []
    for u in conv.get("dialog", []):
        role = _SPEAKERS.get(str(u.get("speaker", "")).lower())
        text = str(u.get("text") or "").strip()
        if role is None or not text:
            continue
        strategy = normalise_strategy(u.get("strategy")) if role == "supporter" else None
        if turns and turns[-1]["role"] == role:
            turns[-1]["text"] += " " + text
            if strategy:
                turns[-1]["strategies"].append(strategy)
            continue
        turns.append({"role": role, "text": text, "intensity": None, "strategies": [strategy] if strategy else []})
    for t in turns:  # the turn's strategy is its first utterance's (what the supporter opened the turn with)
        if t["role"] == "supporter":
            t["strategy"] = t["strategies"][0] if t["strategies"] else None
        else:
            del t["strategies"]
    seekers = [t for t in turns if t["role"] == "seeker"]
    initial, final = intensities(conv)
    if seekers:
        seekers[0]["intensity"] = initial
        if len(seekers) > 1:
            seekers[-1]["intensity"] = final
    return {"id": "esconv-" + content_id([source, conv.get("situation"), turns[:2]], 12), "source": source,
            "problem_type": conv.get("problem_type"), "emotion_type": conv.get("emotion_type"), "turns": turns}


def human_dialogues(folder: str | Path, split: str, limit: int) -> list[dict[str, Any]]:
    """The first `limit` (0 = all) usable conversations of a split, in file order, as contract dialogues."""
    out = []
    for i, conv in enumerate(read_split(folder, split)):
        d = to_dialogue(conv, f"esconv-{split}:{i}")
        if any(t["role"] == "seeker" for t in d["turns"]) and any(t["role"] == "supporter" for t in d["turns"]):
            out.append(d)
        if limit and len(out) >= limit:
            break
    return out
