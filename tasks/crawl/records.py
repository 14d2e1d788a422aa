"""Reddit records, declared once for every reader (dumps, thread tables, live praw): normalisation of submissions
and comments to one record shape, the author rule (pseudonym + bot flag) and the pseudonymiser.

Privacy: every author name passes through `Pseudonymiser` (keyed HMAC) before a record leaves the reader that
produced it, so no raw username reaches a file, a Prefect result, a log line or MLflow.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


KEY_ENV = "ESVR_PSEUDONYM_KEY"
DELETED = frozenset({"[deleted]", "[removed]"})
# `u/name` and `/u/name` mentions inside texts are usernames too: they are replaced by the same pseudonym.
_MENTION = re.compile(r"(?<![A-Za-z0-9_])(/?u/)([A-Za-z0-9_-]{3,20})")


class CrawlError(RuntimeError):
    """Bad crawl input or configuration; the message names the file/record and how to fix it."""


# ------------------------------------------------------------------------------------------------ pseudonyms
class Pseudonymiser:
    """Keyed hash of Reddit usernames: `u_` + 16 hex chars of HMAC-SHA256(key, name). Same key -> same pseudonym."""

    def __init__(self, key: bytes):
        if not key:
            raise CrawlError(f"empty pseudonymisation key: set {KEY_ENV} to a long random secret")
        self._key = key
        self._cache: dict[str, str] = {}

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def fingerprint(self) -> str:
        """A non-secret id of the key (cache keys change when the key does; the key itself is never stored)."""
        return hmac.new(self._key, b"esvr-key-fingerprint", hashlib.sha256).hexdigest()[:12]

    def __call__(self, name: str | None) -> str:
        if name is None or name == "":
            return ""
        out = self._cache.get(name)
        if out is None:
            out = "u_" + hmac.new(self._key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
            self._cache[name] = out
        return out

    def scrub(self, text: str) -> str:
        """Replace `u/name` mentions in a text by the pseudonym of that name."""
        if "u/" not in text:
            return text
        return _MENTION.sub(lambda m: m.group(1) + self(m.group(2)), text)


def fallback_key(seed: int) -> bytes:
    """The documented, NON-secret fallback key of the tiny profile: sha256("esvr-tiny-fallback-key:<seed>").

    Anyone can recompute it, so pseudonyms made with it only hide names from casual readers; real crawls must set
    ESVR_PSEUDONYM_KEY.
    """
    return hashlib.sha256(f"esvr-tiny-fallback-key:{seed}".encode()).digest()


def pseudonymiser_from_env(allow_fallback: bool, seed: int) -> Pseudonymiser:
    """Key from $ESVR_PSEUDONYM_KEY (or .env); the fallback only when params allow it, with a warning."""
    key = os.environ.get(KEY_ENV, "")
    if key:
        return Pseudonymiser(key.encode("utf-8"))
    if not allow_fallback:
        raise CrawlError(
            f"{KEY_ENV} is not set: put a long random secret in the environment or in .env "
            f"(e.g. `echo {KEY_ENV}=$(openssl rand -hex 32) >> .env`), or set crawl.pseudonym_fallback: true "
            "(tiny profile only; the fallback key is public)"
        )
    log.warning(
        "%s is not set: using the documented public fallback key (crawl.pseudonym_fallback: true). Pseudonyms are "
        "NOT secret; set %s for any real crawl.", KEY_ENV, KEY_ENV,
    )
    return Pseudonymiser(fallback_key(seed))


# ------------------------------------------------------------------------------------------------ normalisation
def to_epoch(v: Any) -> int | None:
    """`created_utc` drifts between int, float and numeric string across dump years; None when absent/invalid."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    if isinstance(v, str):
        try:
            return int(float(v))
        except ValueError:
            return None
    return None


def strip_prefix(v: Any) -> str:
    s = "" if v is None else str(v)
    return s[3:] if len(s) > 3 and s[2] == "_" and s[0] == "t" else s


def submission_record(sid: Any, sub: Any, author: Any, t: Any, title: Any, selftext: Any) -> dict[str, Any] | None:
    """The one submission normalisation (field values in, record out); None without an id. `normalise_submission`
    feeds it from a dict, the dump reader from its decoded line structs."""
    sid = strip_prefix(sid)
    if not sid:
        return None
    return {
        "kind": "s",
        "id": sid,
        "subreddit": str(sub or ""),
        "author": author if type(author) is str else "[deleted]",
        "created_utc": t if type(t) is int else to_epoch(t),
        "title": str(title or ""),
        "text": str(selftext or ""),
    }


def normalise_submission(d: dict[str, Any]) -> dict[str, Any] | None:
    """Dump/API submission -> {kind, id, subreddit, author, created_utc, title, text}; None without an id."""
    get = d.get
    t = get("created_utc")
    return submission_record(get("id") or get("name"), get("subreddit"), get("author"),
                             t if t is not None else get("created"), get("title"), get("selftext"))


def comment_record(cid: Any, link: Any, parent: Any, t: Any, author: Any, body: Any, sub: Any) -> dict[str, Any] | None:
    """The one comment normalisation (field values in, record out); None without an id or a link id.

    The dump reader's hot path (one call per kept line): plain type checks, no helper calls in the common case.
    """
    if not cid or not link:
        return None
    if type(cid) is not str:
        cid = str(cid)
    if cid[:3] == "t1_":
        cid = cid[3:]
    if type(link) is not str:
        link = str(link)
    if link[:3] != "t3_":
        link = "t3_" + link
    parent = parent or link
    return {
        "kind": "c",
        "id": cid,
        "link_id": link,
        "parent_id": parent if type(parent) is str else str(parent),
        "subreddit": sub if type(sub) is str else str(sub or ""),
        "author": author if type(author) is str else "[deleted]",
        "created_utc": t if type(t) is int else to_epoch(t),
        "text": body if type(body) is str else ("" if body is None else str(body)),
    }


def normalise_comment(d: dict[str, Any]) -> dict[str, Any] | None:
    """Dump/API comment -> {kind, id, link_id, parent_id, subreddit, author, created_utc, text}; None if unusable."""
    get = d.get
    t = get("created_utc")
    return comment_record(get("id") or get("name"), get("link_id"), get("parent_id"), t if t is not None else get("created"),
                          get("author"), get("body"), get("subreddit"))


def author_decision(a: str, pseudo: Pseudonymiser, rules: ThreadRules) -> tuple[str, bool]:
    """The one rule for an author: (pseudonym, is_bot). Deleted markers stay (they are not names); bots are flagged
    on the raw name, which is not kept."""
    return (a if a in DELETED else pseudo(a), rules.is_bot(a))


def pseudonymise_record(rec: dict[str, Any], pseudo: Pseudonymiser, rules: ThreadRules) -> dict[str, Any]:
    """Replace the author by its pseudonym and flag bots (`author_decision`), scrub u/ mentions."""
    out = dict(rec)
    out["author"], out["bot"] = author_decision(rec["author"], pseudo, rules)
    out["text"] = pseudo.scrub(rec["text"])
    if rec.get("title"):
        out["title"] = pseudo.scrub(rec["title"])
    return out


class AuthorTable(dict):
    """author -> `author_decision`, each distinct name decided once. A dict with `__missing__`, so a hit is one
    C-level lookup in the dump reader's hot loops."""

    def __init__(self, pseudo: Pseudonymiser, rules: ThreadRules):
        super().__init__()
        self.pseudo, self.rules = pseudo, rules

    def __missing__(self, a: str) -> tuple[str, bool]:
        hit = self[a] = author_decision(a, self.pseudo, self.rules)
        return hit


def pseudonymise_many(recs: list[dict[str, Any]], pseudo: Pseudonymiser, rules: ThreadRules,
                      names: AuthorTable | None = None) -> list[dict[str, Any]]:
    """`pseudonymise_record` for a batch, in place, deciding each distinct author once (the dump reader's hot path;
    pass `names` to share the decisions across batches)."""
    names = AuthorTable(pseudo, rules) if names is None else names
    scrub = pseudo.scrub
    for r in recs:
        r["author"], r["bot"] = names[r["author"]]
        text = r["text"]
        if "u/" in text:
            r["text"] = scrub(text)
        if "title" in r and "u/" in r["title"]:
            r["title"] = scrub(r["title"])
    return recs


# ------------------------------------------------------------------------------------------------ threads
@dataclass(frozen=True)
class ThreadRules:
    """What the thread builder drops (from params `crawl`)."""

    drop_authors: tuple[str, ...] = ("AutoModerator",)
    # "some_bot", "bot", "RemindMeBot" but not "abbot"/"robot": a separator or a capital B before "bot".
    bot_regex: str = r"(?i:(^|[-_])bot)$|Bot$"
    keep_without_submission: bool = True  # comment-only dumps (RC_*): thread with an empty stub post

    def is_bot(self, author: str | None) -> bool:
        if not author or author in DELETED:
            return False
        if author.lower() in _lowered(self.drop_authors):
            return True
        return bool(self.bot_regex) and _compiled(self.bot_regex).search(author) is not None


@functools.cache
def _lowered(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n.lower() for n in names)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
