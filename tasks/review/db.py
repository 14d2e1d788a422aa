"""The review page's store: pairs, raters (hashed tokens) and verdicts in one SQLite file in WAL mode.

Why SQLite: one file the reviewer can copy, concurrent readers with one writer at a time (WAL), and writes that are
durable once the request returns (`synchronous=FULL`). A verdict is keyed by (rater, pair): a resubmission, a double
click or a replayed POST cannot count twice, and `INSERT ... ON CONFLICT DO NOTHING` inside the writer's lock cannot
lose one either. Every call opens its own connection (FastAPI runs handlers in a thread pool; sqlite3 connections do
not cross threads), with a busy timeout so 50 raters submitting at once queue instead of failing.

Tokens: `esvr review invite` prints a token once; only its sha256 is stored, so the database file alone lets nobody
rate as someone else. Left/right placement and pair order come from a per-rater random salt: stable on reload,
different between raters, unknown to the rater.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.review.pairs import CHOICES, CRITERION_KEYS, pair_hash

SCHEMA_VERSION = "review-db-v1"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
  pair_id TEXT PRIMARY KEY, sha TEXT NOT NULL, variant_a TEXT NOT NULL, variant_b TEXT NOT NULL,
  doc TEXT NOT NULL, loaded REAL NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
  rater_id TEXT PRIMARY KEY, name TEXT NOT NULL, token_sha TEXT NOT NULL UNIQUE, salt TEXT NOT NULL,
  created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
  rater_id TEXT NOT NULL REFERENCES raters(rater_id), pair_id TEXT NOT NULL REFERENCES pairs(pair_id),
  pair_sha TEXT NOT NULL, a_left INTEGER NOT NULL CHECK (a_left IN (0, 1)),
  {", ".join(f"{k} TEXT NOT NULL CHECK ({k} IN ('a', 'b', 'tie'))" for k in CRITERION_KEYS)},
  comment TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (rater_id, pair_id));
"""


class ReviewDBError(RuntimeError):
    """A store that cannot take this operation (changed pairs with verdicts, unknown pair); says what to do."""


@dataclass(frozen=True)
class Rater:
    rater_id: str
    name: str
    salt: str

    def mac(self, what: str) -> bytes:
        return hmac.new(self.salt.encode(), what.encode(), hashlib.sha256).digest()

    def a_left(self, pair_id: str) -> bool:
        """Whether this rater sees dialogue a on the left of this pair (half the pairs, unpredictably)."""
        return bool(self.mac(f"side:{pair_id}")[0] & 1)

    def order_key(self, pair_id: str) -> bytes:
        return self.mac(f"order:{pair_id}")

    @property
    def csrf(self) -> str:
        return self.mac("csrf").hex()[:32]


def token_sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ReviewDB:
    """Open (and create) the store at `path`."""

    def __init__(self, path: str | Path, busy_timeout_ms: int):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(str(self.path), timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # a verdict acknowledged to a rater survives a power cut too
            db.execute("PRAGMA foreign_keys = ON")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the writer lock up front (no upgrade deadlock between readers)."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -------------------------------------------------------------------------------------- meta
    def set_meta(self, key: str, value: str) -> None:
        with self.write() as db:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (key, value))

    def get_meta(self, key: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -------------------------------------------------------------------------------------- pairs
    def load_pairs(self, pairs: list[dict[str, Any]]) -> dict[str, int]:
        """Add new pairs, keep identical ones; a changed pair is replaced only while it has no verdicts."""
        added = same = replaced = 0
        now = time.time()
        with self.write() as db:
            for p in pairs:
                sha = pair_hash(p)
                row = db.execute("SELECT sha FROM pairs WHERE pair_id = ?", (p["pair_id"],)).fetchone()
                if row and row[0] == sha:
                    same += 1
                    continue
                if row:
                    n = db.execute("SELECT COUNT(*) FROM verdicts WHERE pair_id = ?", (p["pair_id"],)).fetchone()[0]
                    if n:
                        raise ReviewDBError(
                            f"pair {p['pair_id']!r} changed but already has {n} verdict(s) in {self.path}; give the "
                            "new dialogue a new pair_id (verdicts belong to the text that was judged)")
                    replaced += 1
                else:
                    added += 1
                db.execute("INSERT INTO pairs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(pair_id) DO UPDATE SET "
                           "sha = excluded.sha, variant_a = excluded.variant_a, variant_b = excluded.variant_b, "
                           "doc = excluded.doc, loaded = excluded.loaded",
                           (p["pair_id"], sha, p["a"]["variant"], p["b"]["variant"],
                            json.dumps(p, ensure_ascii=False), now))
        return {"added": added, "unchanged": same, "replaced": replaced}

    def pair(self, pair_id: str) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT doc FROM pairs WHERE pair_id = ?", (pair_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def pair_ids(self) -> list[str]:
        with self.connect() as db:
            return [r[0] for r in db.execute("SELECT pair_id FROM pairs ORDER BY pair_id")]

    # -------------------------------------------------------------------------------------- raters
    def invite(self, name: str, token_bytes: int) -> tuple[str, str]:
        """A new rater; returns (rater_id, token). The token is shown once and stored only as its hash."""
        token = secrets.token_urlsafe(token_bytes)
        rater_id = "r-" + secrets.token_hex(6)
        with self.write() as db:
            db.execute("INSERT INTO raters VALUES (?, ?, ?, ?, ?)",
                       (rater_id, name, token_sha(token), secrets.token_hex(16), time.time()))
        return rater_id, token

    def rater(self, token: str | None) -> Rater | None:
        """The rater a token belongs to (None for a missing or unknown token)."""
        if not token:
            return None
        with self.connect() as db:
            row = db.execute("SELECT rater_id, name, salt FROM raters WHERE token_sha = ?",
                             (token_sha(token),)).fetchone()
        return Rater(*row) if row else None

    def raters(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute("SELECT r.rater_id, r.name, r.created, COUNT(v.pair_id) FROM raters r LEFT JOIN "
                              "verdicts v USING (rater_id) GROUP BY r.rater_id ORDER BY r.created").fetchall()
        return [{"rater_id": r[0], "name": r[1], "created": r[2], "verdicts": r[3]} for r in rows]

    # -------------------------------------------------------------------------------------- verdicts
    def rated(self, rater: Rater) -> set[str]:
        with self.connect() as db:
            return {r[0] for r in db.execute("SELECT pair_id FROM verdicts WHERE rater_id = ?", (rater.rater_id,))}

    def next_pair(self, rater: Rater) -> tuple[dict[str, Any] | None, int, int]:
        """The rater's next unrated pair in their own order, and (done, total)."""
        ids = self.pair_ids()
        done = self.rated(rater)
        todo = sorted((p for p in ids if p not in done), key=rater.order_key)
        return (self.pair(todo[0]) if todo else None), len(done & set(ids)), len(ids)

    def record(self, rater: Rater, pair_id: str, choices: dict[str, str], comment: str) -> bool:
        """Store one verdict; `choices` maps each criterion to left/right/tie as this rater saw the page. Returns
        False when this rater already judged this pair (nothing changes: the first verdict stands)."""
        missing = [k for k in CRITERION_KEYS if choices.get(k) not in CHOICES]
        if missing:
            raise ValueError(f"choose one of {list(CHOICES)} for {missing}")
        a_left = rater.a_left(pair_id)
        side = {"left": "a" if a_left else "b", "right": "b" if a_left else "a", "tie": "tie"}
        with self.write() as db:
            row = db.execute("SELECT sha FROM pairs WHERE pair_id = ?", (pair_id,)).fetchone()
            if row is None:
                raise ReviewDBError(f"unknown pair_id {pair_id!r}")
            cur = db.execute(
                f"INSERT INTO verdicts (rater_id, pair_id, pair_sha, a_left, {', '.join(CRITERION_KEYS)}, comment, "
                f"created) VALUES (?, ?, ?, ?, {', '.join('?' for _ in CRITERION_KEYS)}, ?, ?) "
                "ON CONFLICT(rater_id, pair_id) DO NOTHING",
                (rater.rater_id, pair_id, row[0], int(a_left), *(side[choices[k]] for k in CRITERION_KEYS),
                 comment, time.time()))
            return cur.rowcount == 1

    def verdicts(self) -> list[dict[str, Any]]:
        """Every verdict with the pair's variants: the input of `esvr review results`."""
        with self.connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(f"SELECT v.rater_id, v.pair_id, v.pair_sha, v.a_left, "
                              f"{', '.join('v.' + k for k in CRITERION_KEYS)}, v.comment, v.created, "
                              "p.variant_a, p.variant_b FROM verdicts v JOIN pairs p USING (pair_id) "
                              "ORDER BY v.created, v.rater_id").fetchall()
        return [dict(r) for r in rows]
