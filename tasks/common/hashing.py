"""Content hashes: record ids, file checksums and explicit cache keys (each fact hashed one way, here)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Hash of a file or of a folder's sorted (relative path, file hash) pairs."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(f.relative_to(p).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys) for hashing structured values."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def content_id(obj: Any, n: int = 16) -> str:
    """Short, stable id of any JSON-able value (records, requests, configs)."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()[:n]
