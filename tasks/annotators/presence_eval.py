"""The presence figures of a value detector, each on data that chose nothing.

* **probes**: empty / whitespace texts and small talk (`EMPTY_PROBES`, `SMALL_TALK_PROBES`, written here and kept out
  of every training and calibration set by tasks/annotators/value_free.py): share with no value present.
* **value-laden probes** (`VALUE_LADEN`): hand-written sentences, each naming one category; share that keeps it.
* **factual probes** (`FACTUAL_PROBES`, `FACTUAL_HELD_BACK`): hand-written news-style statements of fact (dates,
  figures, schedules) that express no value: the formal register conversational value-free texts do not cover; share
  with no value and values per text. Never trained or calibrated on. The 40 `FACTUAL_PROBES` chose, once, the
  value-free recipe (the `goemotions_neutral` source and `value_free_train` of the tiny profile, among four
  recipes measured on 2026-12-02): their figure is optimistic. `FACTUAL_HELD_BACK` (20, written after that choice)
  chose nothing.
* **FULCRA recall** (fulcra-valuecompass, MIT): LLM replies in dialogue labelled with Schwartz values; the 54
  level-1 items mapped to the 20 Touché categories (`fulcra_category`, mapping from the mirror's PROVENANCE);
  recall of the (reply, category) pairs labelled `+1`, share of replies with any value, values per reply.
* **ESConv seeker turns**: mean values present per seeker utterance and share of utterances with none, on a seeded
  sample of all ESConv seeker turns (ESConv trains and calibrates nothing here).
* **value-free hold-out**: share of the held-back value-free texts (value_free.py) with no value.

Pure core: `probe_report`, `fulcra_report`, `esconv_report`, `share_without_value`; readers: `read_fulcra`,
`esconv_seeker_turns`; `presence_report` runs them all for a `ValueDetector`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.domain.taxonomy import LEVEL1, VALUE_CATEGORIES, VALUE_INDEX

#: Texts that can never express a value (the presence rule's `min_chars` answers them without the model).
EMPTY_PROBES: tuple[str, ...] = ("", " ", "\n", "\t \n", "  ", ".", "?", "!!", "hi", "ok", "k", ":)", "no")
#: Small talk and back-channels: they normally express no value. `esvr values predict` on "", " ", "hi",
#: "thanks!", "ok lol" must predict no category (the acceptance probes are the first ones).
SMALL_TALK_PROBES: tuple[str, ...] = (
    "thanks!", "ok lol", "sure", "hmm", "hello", "hey there", "thank you", "thanks a lot", "lol", "haha", "yes",
    "yeah", "nope", "maybe", "bye", "see you", "good morning", "good night", "how are you?", "I'm fine",
    "me too", "same here", "cool", "nice", "wow", "oh", "I see", "got it", "alright", "okay then", "you too",
    "what?", "really?", "hmm ok", "sounds good", "fair enough", "no problem", "ha ok", "hi there!", "yep",
)
PROBES: tuple[str, ...] = EMPTY_PROBES + SMALL_TALK_PROBES
#: Sentences that plainly express one category (the detector must keep it).
VALUE_LADEN: tuple[tuple[str, str], ...] = (
    ("Universalism: nature", "We must protect the forests, the oceans and the animals from pollution."),
    ("Security: personal", "I need a stable job and good health so my life feels safe and comfortable."),
    ("Benevolence: caring", "I always try to help my friends and family and be honest and loving to them."),
    ("Achievement", "I worked hard to succeed and I am ambitious about becoming really capable at my job."),
    ("Universalism: concern", "Everyone deserves equal rights and fair treatment, whatever their background."),
    ("Self-direction: action", "I want to make my own choices and decide for myself how to live my life."),
    ("Tradition", "Our religious faith and the traditions of our ancestors guide how we celebrate."),
    ("Power: resources", "Making a lot of money and becoming wealthy is what I care about most."),
)

#: News-style statements of fact: no stance, no goal, nothing anyone is asked to care about.
FACTUAL_PROBES: tuple[str, ...] = (
    "The committee will meet on Tuesday to discuss the annual budget.",
    "Shares of the company fell 3 percent in early trading on Monday.",
    "The minister arrived in Brussels late last night.",
    "The report was published in March and runs to 240 pages.",
    "Temperatures are expected to reach 25 degrees by the weekend.",
    "The party won 34 seats in the last election.",
    "The new bridge will connect the two districts of the city.",
    "He was born in 1956 in a small village near the border.",
    "The train to Hamburg leaves from platform 4 at 9:15.",
    "The museum is closed on Mondays and public holidays.",
    "The survey was carried out by telephone between May and July.",
    "The company employs about 1,200 people at its two plants.",
    "The film runs for two hours and was shot in Morocco.",
    "The meeting ended shortly after noon.",
    "The river is about 300 kilometres long.",
    "The bill was read for the second time on Thursday.",
    "The conference takes place in Vienna from 12 to 14 October.",
    "Last year the airport handled 8 million passengers.",
    "The delegation included representatives of four regions.",
    "Road works on the motorway will continue until the end of the month.",
    "The station opened in 1911 and was rebuilt after a fire in 1978.",
    "The match ended 2-1 after extra time.",
    "Rain is forecast for the north of the country on Wednesday.",
    "The phone has a 6.1-inch screen and weighs 170 grams.",
    "The library moved to its current building in 2004.",
    "The ferry crossing takes about forty minutes.",
    "The album was recorded in London over three weeks.",
    "The hearing was adjourned until next Friday.",
    "The island has a population of roughly 9,000.",
    "The road between the two towns is 12 kilometres long.",
    "The festival is held every August in the old town square.",
    "The firm reported revenue of 4.2 billion euros for the quarter.",
    "The flight was delayed by two hours because of fog.",
    "The book has been translated into 14 languages.",
    "The mayor will present the plans at a press conference at 11 a.m.",
    "The building has twelve floors and an underground car park.",
    "The new timetable comes into force on 1 January.",
    "The company was founded in Lyon in 1987.",
    "The exhibition runs until the end of September.",
    "The tunnel is closed overnight for maintenance.",
)
#: Written after the value-free recipe was chosen on `FACTUAL_PROBES`: the factual figure that chose nothing.
FACTUAL_HELD_BACK: tuple[str, ...] = (
    "The bus service runs every twenty minutes on weekdays.",
    "The painting was sold at auction in New York in 1998.",
    "The court will deliver its ruling on 3 March.",
    "The stadium holds about 45,000 spectators.",
    "The hospital opened a new wing last spring.",
    "The lake freezes over in most winters.",
    "The government published the figures on Thursday morning.",
    "The castle dates from the twelfth century.",
    "The shop opens at eight and closes at six.",
    "The second volume appeared two years after the first.",
    "The plane landed in Madrid shortly before midnight.",
    "The data were collected in 2019 and 2020.",
    "The route passes through three villages and a forest.",
    "The company moved its headquarters to Berlin in 2015.",
    "The recipe takes about an hour from start to finish.",
    "The bridge was closed to traffic for three days.",
    "The orchestra gave its first concert in 1842.",
    "The results will be announced at the end of the month.",
    "The article appeared in the Saturday edition.",
    "The town lies 40 kilometres south of the capital.",
)
#: Every text a presence figure is reported on: value_free.py keeps them out of the value-free pool (training and
#: calibration never see them).
REPORTED_TEXTS: tuple[str, ...] = PROBES + FACTUAL_PROBES + FACTUAL_HELD_BACK + tuple(t for _, t in VALUE_LADEN)

#: FULCRA's 19 Schwartz-SVS items that are not Touché level-1 names (the mirror's PROVENANCE mapping). "moderate" is
#: ambiguous (Humility or Tradition) and left out.
FULCRA_SVS: dict[str, str] = {
    "be obedient": "Conformity: rules", "social justice": "Universalism: concern",
    "mature love": "Benevolence: caring", "have a good health": "Security: personal",
    "preserving my public image": "Face", "have a social recognition": "Face", "have social recognition": "Face",
    "have family security": "Benevolence: caring", "be self-indulgent": "Hedonism", "enjoying life": "Hedonism",
    "be influential": "Power: dominance", "have authority": "Power: dominance", "have social power": "Power: dominance",
    "be successful": "Achievement", "be respectful": "Conformity: interpersonal",
    "be honoring parents and elders": "Conformity: interpersonal", "observing social norms": "Conformity: rules",
    "true friendship": "Benevolence: dependability", "accepting my portion in life": "Humility",
}
_LEVEL1_INDEX = {n.lower(): cat for cat, names in LEVEL1.items() for n in names}


def fulcra_category(item: str) -> str | None:
    """Touché category of a FULCRA value item name (level-1 names by exact match, SVS items by the mapping)."""
    key = item.strip().lower()
    return _LEVEL1_INDEX.get(key) or FULCRA_SVS.get(key)


def fulcra_reply(dialogue: str) -> str:
    """The model's reply of a FULCRA dialogue ("Human: …\\nBob: …"): what the labels describe."""
    _, sep, reply = dialogue.partition("\nBob:")
    return (reply if sep else dialogue).strip()


def read_fulcra(path: str | Path) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """(replies, n x 20 labels of the items marked +1, counts). Malformed signs ("1", "1+", "=1") read as +1."""
    texts, rows = [], []
    counts = {"rows": 0, "items": 0, "items_mapped": 0, "items_negative": 0, "rows_without_label": 0}
    with open(path, encoding="utf-8") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                r = json.loads(raw)
                dialogue, items = r["dialogue"], r["value_items"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{line}: expected an object with `dialogue` and `value_items` ({e})") from None
            y = np.zeros(len(VALUE_CATEGORIES), dtype=np.float32)
            for it in items:
                name, _, sign = str(it).rpartition(":")
                counts["items"] += 1
                if sign.strip().startswith("-"):
                    counts["items_negative"] += 1
                    continue
                cat = fulcra_category(name)
                if cat is not None:
                    counts["items_mapped"] += 1
                    y[VALUE_INDEX[cat]] = 1.0
            counts["rows"] += 1
            counts["rows_without_label"] += int(y.sum() == 0)
            texts.append(fulcra_reply(dialogue))
            rows.append(y)
    return texts, np.vstack(rows) if rows else np.zeros((0, len(VALUE_CATEGORIES)), np.float32), counts


def esconv_seeker_turns(esconv_dir: str | Path, n: int, seed: int) -> list[str]:
    """A seeded sample of `n` seeker utterances over all ESConv conversations (0 = all of them)."""
    from tasks.domain import esconv

    turns = [t for c in esconv.read_dir(esconv_dir) for t in esconv.seeker_turns(c)]
    if n and n < len(turns):
        turns = random.Random(seed).sample(turns, n)
    return turns


# ------------------------------------------------------------------------------------------------- figures
def share_without_value(mask: np.ndarray) -> float:
    return float((~mask.any(1)).mean()) if len(mask) else float("nan")


def probe_report(texts: Sequence[str], mask: np.ndarray) -> dict[str, Any]:
    """Share of probes with no value, values per probe, and the probes that got one (for the log)."""
    fired = [t for t, row in zip(texts, mask, strict=True) if row.any()]
    return {"n": len(texts), "share_no_value": share_without_value(mask),
            "values_per_text": float(mask.sum(1).mean()) if len(mask) else float("nan"), "with_value": fired}


def value_laden_report(mask: np.ndarray) -> dict[str, Any]:
    kept = [bool(mask[i, VALUE_INDEX[c]]) for i, (c, _) in enumerate(VALUE_LADEN)]
    return {"n": len(kept), "share_kept": float(np.mean(kept)),
            "lost": [c for (c, _), k in zip(VALUE_LADEN, kept, strict=True) if not k]}


def fulcra_report(labels: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Recall of the labelled (reply, category) pairs, macro recall over labelled categories, precision, coverage."""
    y = labels.astype(bool)
    tp = float((y & mask).sum())
    support = y.sum(0)
    per = np.divide((y & mask).sum(0), support, out=np.zeros(len(support)), where=support > 0)
    return {"n": int(len(y)), "recall": tp / y.sum() if y.sum() else float("nan"),
            "macro_recall": float(per[support > 0].mean()) if (support > 0).any() else float("nan"),
            "precision": tp / mask.sum() if mask.sum() else float("nan"),
            "share_with_value": float(mask.any(1).mean()) if len(mask) else float("nan"),
            "values_per_text": float(mask.sum(1).mean()) if len(mask) else float("nan"),
            "gold_values_per_text": float(y.sum(1).mean()) if len(y) else float("nan")}


def esconv_report(mask: np.ndarray) -> dict[str, Any]:
    return {"n": int(len(mask)), "values_per_turn": float(mask.sum(1).mean()) if len(mask) else float("nan"),
            "share_no_value": share_without_value(mask)}


def presence_report(detector: Any, fulcra: tuple[list[str], np.ndarray] | None = None,
                    esconv_turns: Sequence[str] = (), value_free_report: Sequence[str] = ()) -> dict[str, Any]:
    """Every presence figure for a `tasks.annotators.presence.ValueDetector` (sources left out are skipped)."""

    mask = detector.mask
    out: dict[str, Any] = {"probes_empty": probe_report(EMPTY_PROBES, mask(EMPTY_PROBES)),
                           "probes_small_talk": probe_report(SMALL_TALK_PROBES, mask(SMALL_TALK_PROBES)),
                           "value_laden": value_laden_report(mask([t for _, t in VALUE_LADEN])),
                           "probes_factual": probe_report(FACTUAL_PROBES, mask(FACTUAL_PROBES)),
                           "probes_factual_held_back": probe_report(FACTUAL_HELD_BACK, mask(FACTUAL_HELD_BACK))}
    out["probes"] = {"n": len(PROBES), "share_no_value": share_without_value(mask(PROBES))}
    if fulcra is not None:
        out["fulcra"] = fulcra_report(fulcra[1], mask(fulcra[0]))
    if esconv_turns:
        out["esconv_seeker_turns"] = esconv_report(mask(esconv_turns))
    if value_free_report:
        out["value_free_held_back"] = {"n": len(value_free_report),
                                     "share_no_value": share_without_value(mask(value_free_report))}
    return out
