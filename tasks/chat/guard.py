"""The crisis guard in front of every model turn (`esvr chat`, the review page): a seeker message that shows suicide or
self-harm intent is answered with a fixed safe message and real resources, and no model is called for that turn.

Why a lexicon and not a library or a model: no well-kept package detects suicide/self-harm intent offline (the PyPI
candidates are young single-maintainer 0.x releases; toxicity models such as Detoxify answer another question and
need hub weights), and a guard must be auditable line by line. The method (normalise -> mask idioms -> strong rules
with negation and past-event filters -> weak signals that count in pairs) and its precision/recall on a held-out
hand-labelled set are in docs/safety.md; the lexicon is data (crisis_lexicon.yaml), the resources too
(crisis_resources.yaml, per locale, each entry with its source).

Pure core: `Guard.check(text) -> Verdict`, `Guard.safe_message(locale)`, `Guard.event(...)` (what is logged: never
the message text). I/O: `Guard.load(params)` reads the two data files, `EventLog` appends events to a JSONL file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasks.common import paths
from tasks.common.config import GuardParams

log = logging.getLogger(__name__)

#: What each rule kind means, as a reason a person reads (`esvr guard check`); never the message's own words.
KIND_LABELS = {
    "ideation": "suicidal thoughts",
    "intent": "suicidal intent",
    "passive": "a wish to be dead or not to exist",
    "plan": "a suicide plan",
    "attempt": "a recent suicide attempt",
    "method": "a method of suicide",
    "means": "means or preparation",
    "farewell": "a farewell",
    "self_harm": "self-harm",
    "third_party": "another person in danger",
}
_MASK = " ~ "  # replaces an idiom span: no rule pattern matches across it
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})


class GuardError(ValueError):
    """A lexicon or resources file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Verdict:
    """The guard's answer for one message. `rule` names the lexicon entry that decided (None: nothing matched)."""

    crisis: bool
    reason: str
    rule: str | None = None
    kind: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"crisis": self.crisis, "reason": self.reason}


@dataclass(frozen=True)
class Rule:
    id: str
    pattern: re.Pattern[str]
    kind: str = ""


@dataclass(frozen=True)
class SafeMessage:
    """The fixed answer to a crisis message in one locale (text for a terminal; parts for a page)."""

    locale: str
    message: str
    resources: tuple[dict[str, str], ...]
    emergency: str
    closing: str

    @property
    def text(self) -> str:
        lines = [self.message, ""]
        for r in self.resources:
            lines += [f"  - {r['name']}", f"    {r['contact']}"]
        return "\n".join([*lines, "", self.emergency, self.closing])


# ------------------------------------------------------------------------------------------ the lexicon
@dataclass(frozen=True)
class Lexicon:
    version: str
    normalise: tuple[tuple[re.Pattern[str], str], ...]
    idioms: tuple[Rule, ...]
    rules: tuple[Rule, ...]
    weak: tuple[Rule, ...]
    negations: frozenset[str]
    negation_exceptions: re.Pattern[str]
    scope_breaks: frozenset[str]
    negation_window: int
    past: re.Pattern[str]
    present: re.Pattern[str]

    @classmethod
    def from_yaml(cls, path: Path) -> Lexicon:
        data = _read_yaml(path)

        def compile_(entry: Any, where: str) -> re.Pattern[str]:
            try:
                return re.compile(entry)
            except (re.error, TypeError) as e:
                raise GuardError(f"{path}: {where}: not a valid regular expression ({e})") from None

        def rules(section: str, need_kind: bool) -> tuple[Rule, ...]:
            out = []
            for i, r in enumerate(data.get(section) or []):
                if not isinstance(r, dict) or "id" not in r or "pattern" not in r:
                    raise GuardError(f"{path}: {section}[{i}]: needs `id` and `pattern`")
                kind = r.get("kind", "")
                if need_kind and kind not in KIND_LABELS:
                    raise GuardError(f"{path}: {section}[{i}] ({r['id']}): kind {kind!r} is not one of "
                                     f"{sorted(KIND_LABELS)}")
                out.append(Rule(r["id"], compile_(r["pattern"], f"{section}[{i}] ({r['id']})"), kind))
            ids = [r.id for r in out]
            if len(ids) != len(set(ids)):
                raise GuardError(f"{path}: {section}: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
            return tuple(out)

        for key in ("version", "rules", "idioms", "negations", "past_markers", "present_markers", "normalise"):
            if key not in data:
                raise GuardError(f"{path}: missing key `{key}`")
        norm = [(re.compile(r"\b" + re.escape(k) + r"\b"), str(v)) for k, v in data["normalise"].items()]
        norm += [(re.compile(re.escape(k) + r"\b"), str(v)) for k, v in (data.get("endings") or {}).items()]
        exceptions = data.get("negation_exceptions") or []
        return cls(
            version=str(data["version"]), normalise=tuple(norm), idioms=rules("idioms", False),
            rules=rules("rules", True), weak=rules("weak", False),
            negations=frozenset(data["negations"]),
            negation_exceptions=re.compile("|".join(r"\b" + re.escape(e) + r"\b" for e in exceptions) or "(?!)"),
            scope_breaks=frozenset(data.get("scope_breaks") or []),
            negation_window=int(data.get("negation_window", 5)),
            past=compile_("|".join(data["past_markers"]), "past_markers"),
            present=compile_("|".join(data["present_markers"]), "present_markers"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise GuardError(f"{path}: cannot read ({e}); see guard.lexicon / guard.resources in params.yaml") from None
    except yaml.YAMLError as e:
        raise GuardError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise GuardError(f"{path}: top level must be a mapping")
    return data


def normalise(text: str, lexicon: Lexicon) -> str:
    """Lower case, straight apostrophes, contractions and chat spellings expanded, single spaces."""
    t = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    for pattern, repl in lexicon.normalise:
        t = pattern.sub(repl, t)
    return " ".join(t.split())


# ------------------------------------------------------------------------------------------ the guard
class Guard:
    """Checks seeker messages and holds the safe message of every configured locale."""

    def __init__(self, lexicon: Lexicon, locales: dict[str, SafeMessage], default_locale: str,
                 resources_version: str = ""):
        if default_locale not in locales and _language(default_locale) not in locales:
            raise GuardError(f"guard.locale {default_locale!r} has no safe message; known: {sorted(locales)}")
        self.lexicon, self.locales, self.default_locale = lexicon, locales, default_locale
        self.resources_version = resources_version

    @classmethod
    def load(cls, params: GuardParams, root: Path | None = None) -> Guard:
        """The guard from its params group (files relative to the project root)."""
        base = root or paths.ROOT
        lexicon = Lexicon.from_yaml(_path(params.lexicon, base))
        res_path = _path(params.resources, base)
        data = _read_yaml(res_path)
        locales: dict[str, SafeMessage] = {}
        for name, entry in (data.get("locales") or {}).items():
            missing = [k for k in ("message", "resources", "emergency", "closing") if not entry.get(k)]
            if missing:
                raise GuardError(f"{res_path}: locales.{name}: missing {missing}")
            for i, r in enumerate(entry["resources"]):
                lacks = [k for k in ("name", "contact", "source") if not r.get(k)]
                if lacks:
                    raise GuardError(f"{res_path}: locales.{name}.resources[{i}]: missing {lacks} (every resource "
                                     "names where it was taken from)")
            resources = tuple({k: str(v) for k, v in r.items()} for r in entry["resources"])  # 109: a number in YAML
            locales[name] = SafeMessage(name, " ".join(entry["message"].split()), resources,
                                        " ".join(entry["emergency"].split()), " ".join(entry["closing"].split()))
        if "en" not in locales:
            raise GuardError(f"{res_path}: locales.en is required (the fallback of every other locale)")
        return cls(lexicon, locales, params.locale, str(data.get("version", "")))

    # -------------------------------------------------------------------------------------- checking
    def check(self, text: str) -> Verdict:
        """Crisis or not, with the rule that decided; the reason never quotes the message."""
        lx = self.lexicon
        t = normalise(text, lx)
        idioms = []
        for rule in lx.idioms:
            if rule.pattern.search(t):
                idioms.append(rule.id)
                t = rule.pattern.sub(_MASK, t)
        discarded: list[tuple[str, str]] = []  # (why, rule id) of matches that did not count
        for clause in _clauses(t):
            for rule in lx.rules:
                for m in rule.pattern.finditer(clause):
                    if self._negated(clause[: m.start()]):
                        discarded.append(("negated", rule.id))
                    elif lx.past.search(clause) and not lx.present.search(clause):
                        discarded.append(("past event", rule.id))
                    else:
                        return Verdict(True, f"{KIND_LABELS[rule.kind]} ({rule.id})", rule.id, rule.kind)
        weak = [r.id for r in lx.weak if r.pattern.search(t)]
        if len(weak) >= 2:
            return Verdict(True, f"farewell or preparation signals ({' + '.join(weak)})", weak[0], "farewell")
        if discarded:
            why, rid = discarded[0]
            return Verdict(False, f"{why} ({rid})", rid)
        if weak:
            return Verdict(False, f"one weak signal only ({weak[0]})", weak[0])
        if idioms:
            return Verdict(False, f"idiom ({idioms[0]})", idioms[0])
        return Verdict(False, "no crisis signal")

    def _negated(self, before: str) -> bool:
        """A negation cue among the last words before a match, with no new clause start in between."""
        lx = self.lexicon
        words = lx.negation_exceptions.sub(" _ ", before.rsplit(",", 1)[-1]).split()[-lx.negation_window:]
        for i in range(len(words) - 1, -1, -1):
            if words[i] in lx.negations:
                return True
            if words[i] in lx.scope_breaks:
                return False
        return False

    # -------------------------------------------------------------------------------------- answering
    def locale_for(self, locale: str | None) -> str:
        """The configured locale that serves `locale`: itself, its language ("en-NZ" -> "en"), else `en`."""
        want = locale or self.default_locale
        for cand in (want, _language(want), self.default_locale, _language(self.default_locale), "en"):
            if cand in self.locales:
                return cand
        return "en"

    def safe_message(self, locale: str | None = None) -> SafeMessage:
        return self.locales[self.locale_for(locale)]

    def event(self, verdict: Verdict, source: str, locale: str | None = None, session: str = "",
              turn: int | None = None) -> dict[str, Any]:
        """What is logged for a crisis turn: when, where, which rule and locale — never the message text."""
        return {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "source": source,
                "session": session, "turn": turn, "rule": verdict.rule, "kind": verdict.kind,
                "locale": self.locale_for(locale), "lexicon": self.lexicon.version,
                "resources": self.resources_version}


class EventLog:
    """Guard events, one JSON line each, appended and fsync'd (None path: the logger only)."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, event: dict[str, Any]) -> None:
        log.info("crisis guard: safe message shown instead of a model turn (source %s, rule %s)",
                    event["source"], event["rule"])
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def event_log(params: GuardParams, root: Path | None = None) -> EventLog:
    return EventLog(_path(params.events_file, root or paths.ROOT) if params.events_file else None)


def _clauses(t: str) -> list[str]:
    return [c.strip() for c in re.split(r"[.!?;\n]+|\bbut\b", t) if c.strip()]


def _language(locale: str) -> str:
    return locale.split("-", 1)[0].split("_", 1)[0]


def _path(p: str, root: Path) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else root / q


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(guard: Guard, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision, recall and F1 of the crisis class on labelled rows `{"text", "crisis": bool}`, and the misses."""
    tp = fp = fn = tn = 0
    misses: list[dict[str, Any]] = []
    for r in rows:
        v = guard.check(r["text"])
        if v.crisis and r["crisis"]:
            tp += 1
        elif v.crisis:
            fp += 1
            misses.append({"error": "false positive", "kind": r.get("kind"), "text": r["text"], "reason": v.reason})
        elif r["crisis"]:
            fn += 1
            misses.append({"error": "false negative", "kind": r.get("kind"), "text": r["text"], "reason": v.reason})
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(rows), "crisis": tp + fn, "not_crisis": fp + tn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": precision, "recall": recall, "f1": f1, "errors": misses}
