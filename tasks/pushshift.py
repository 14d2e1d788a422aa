"""Pushshift dump reader: `RC_*/RS_*.zst` monthly dumps and `<sub>_comments/_submissions.zst` extracts.

* Streaming zstd with a 2**31 window (the monthly dumps need it), frame by frame, so multi-frame files work too.
* Decompressed bytes are cut into blocks on line boundaries and parsed as *bytes*: a multi-byte UTF-8 character
  split across two reads can never break a line (b"\\n" never occurs inside a multi-byte sequence), so there is no
  decode-and-retry dance.
* orjson parses; drifting fields are normalised (tasks.crawl.normalise_*); subreddit and date filters apply.
* "Parse only what can match": with a subreddit filter, only lines that contain `"<name>"` (ASCII
  case-insensitive) are parsed; the others are checked structurally (`{` ... `}`) for the malformed count.
* Both cores: the main process decompresses and cuts blocks, a process pool parses them (bounded in-flight
  window, results in file order); several files go one per worker.
* A truncated file fails with its name and byte offsets; malformed lines are counted and bounded by a threshold.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import re
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import zstandard

from tasks.crawl import (
    CrawlError,
    Pseudonymiser,
    ThreadRules,
    normalise_comment,
    normalise_submission,
    pseudonymise_many,
)

log = logging.getLogger(__name__)

MAX_WINDOW = 2**31  # Pushshift monthly dumps are written with --long=31
READ_BYTES = 1 << 22  # compressed bytes per read
BLOCK_BYTES = 1 << 24  # decompressed bytes per parse block (one unit of work for a worker)
PARALLEL_MIN_BYTES = 2 << 20  # compressed; below this a pool costs more than it saves


class DumpError(CrawlError):
    """A dump that cannot be read (truncated, corrupt, too many malformed lines)."""


@dataclass(frozen=True)
class DumpSpec:
    """What to keep from a dump and how to pseudonymise it (picklable; sent once to each worker)."""

    subreddit: str | None = None
    since: int | None = None  # epoch seconds, inclusive
    until: int | None = None  # epoch seconds, exclusive
    prefilter: bool = True
    key: bytes = b""
    rules: ThreadRules = ThreadRules()
    pseudonymise: bool = True


def file_kind(path: Path) -> str | None:
    """'s' (submissions), 'c' (comments) from the Pushshift naming conventions; None when the name says nothing."""
    n = path.name
    if n.startswith("RS_") or "_submissions" in n:
        return "s"
    if n.startswith("RC_") or "_comments" in n:
        return "c"
    return None


# ------------------------------------------------------------------------------------------------ decompression
def iter_blocks(path: Path, block_bytes: int = BLOCK_BYTES, read_bytes: int = READ_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield (decompressed offset, bytes) blocks that end on a line boundary (the last may lack its b"\\n").

    Raises DumpError naming the file and offsets when the stream is corrupt or ends inside a frame.
    """
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    dobj = dctx.decompressobj()
    in_frame = False  # bytes of an unfinished frame were fed
    parts: list[bytes] = []
    size = 0
    offset = 0  # decompressed offset of parts[0]
    consumed = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(read_bytes):
            data = chunk
            while data:
                try:
                    out = dobj.decompress(data)
                except zstandard.ZstdError as e:
                    raise DumpError(
                        f"{path}: corrupt zstd data in compressed bytes {consumed}-{consumed + len(chunk)} "
                        f"(decompressed offset {offset + size}): {e}; re-download or re-compress the file"
                    ) from None
                in_frame = True
                if dobj.eof:  # frame done; the rest of `data` starts the next frame
                    data = dobj.unused_data
                    dobj = dctx.decompressobj()
                    in_frame = False
                else:
                    data = b""
                if out:
                    parts.append(out)
                    size += len(out)
                if size >= block_bytes:
                    buf = b"".join(parts)
                    cut = buf.rfind(b"\n") + 1
                    if cut:
                        yield offset, buf[:cut]
                        offset += cut
                        parts, size = ([buf[cut:]], len(buf) - cut) if cut < len(buf) else ([], 0)
                    else:  # one line longer than a block: keep reading
                        parts = [buf]
            consumed += len(chunk)
    tail = b"".join(parts)
    if in_frame:
        last = tail.rfind(b"\n") + 1
        if last:
            yield offset, tail[:last]
        raise DumpError(
            f"{path}: truncated: the zstd stream ends inside a frame at compressed byte {consumed} "
            f"(decompressed byte {offset + len(tail)}, last complete line ends at byte {offset + last}); "
            "the file is incomplete: download it again"
        )
    if tail:
        yield offset, tail


# ------------------------------------------------------------------------------------------------ parsing
def _empty_counts() -> Counter:
    return Counter(lines=0, malformed_lines=0, matched=0, date_filtered=0, parsed=0)


def _line_table(block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, structurally_ok) of the block's non-empty lines, vectorised: a JSON object line starts with
    `{` and ends with `}` (before an optional \r). Costs about one pass over the bytes."""
    arr = np.frombuffer(block, np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate((np.zeros(1, np.int64), nl + 1))
    ends = np.concatenate((nl, np.array([len(block)], np.int64)))
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    last = ends - 1
    if len(last):
        cr = arr[last] == 13
        if cr.any():
            last = np.where(cr & (last > starts), last - 1, last)
        ok = (arr[starts] == 123) & (arr[last] == 125)
    else:
        ok = np.zeros(0, bool)
    return starts, ends, ok


def parse_block(block: bytes, base: int, kind: str | None, spec: DumpSpec) -> tuple[list[dict[str, Any]], Counter, int]:
    """One block -> (kept normalised records, counters, decompressed offset of the first malformed line or -1)."""
    with _no_gc():
        return _parse_block(block, base, kind, spec)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC: building millions of acyclic record dicts otherwise triggers full collections that
    rescan every record kept so far (quadratic); the records hold no cycles, reference counting frees them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _parse_block(block: bytes, base: int, kind: str | None, spec: DumpSpec) -> tuple[list[dict[str, Any]], Counter, int]:
    starts, ends, ok = _line_table(block)
    n_lines = len(starts)
    sub = spec.subreddit.lower() if spec.subreddit else None
    if sub is not None and spec.prefilter:
        # Only lines that contain the quoted name can match. `lower()` keeps byte offsets (ASCII only); the loop
        # runs once per hit, not per line. Other lines are only checked structurally (malformed count).
        low = block.lower()
        needle = b'"' + sub.encode("utf-8") + b'"'
        if low.count(needle) * 4 < n_lines:
            hits = []
            pos = low.find(needle)
            while pos >= 0:
                hits.append(pos)
                pos = low.find(needle, pos + len(needle))
            idx = np.unique(np.searchsorted(starts, np.asarray(hits, np.int64), side="right") - 1)
            candidates = idx[ok[idx]] if len(idx) else idx
        else:  # most lines match: a plain pass is cheaper than per-hit bookkeeping
            candidates = np.flatnonzero(ok)
    else:
        candidates = np.flatnonzero(ok)
    structural_bad = np.flatnonzero(~ok)
    out: list[dict[str, Any]] = []
    parsed_bad: list[int] = []
    date_filtered = 0
    since, until = spec.since, spec.until
    dated = since is not None or until is not None
    norm_c, norm_s, loads = normalise_comment, normalise_submission, orjson.loads
    for i, a, e in zip(candidates.tolist(), starts[candidates].tolist(), ends[candidates].tolist(), strict=True):
        try:
            d = loads(block[a:e])
        except orjson.JSONDecodeError:
            parsed_bad.append(i)
            continue
        if type(d) is not dict:
            parsed_bad.append(i)
            continue
        if sub is not None:
            s = d.get("subreddit")
            if s is None or (s != sub and str(s).lower() != sub):
                continue
        k = kind or ("c" if "link_id" in d or "body" in d else "s")
        rec = norm_c(d) if k == "c" else norm_s(d)
        if rec is None:
            parsed_bad.append(i)
            continue
        if dated:
            t = rec["created_utc"]
            if t is None or (since is not None and t < since) or (until is not None and t >= until):
                date_filtered += 1
                continue
        out.append(rec)
    bad = sorted(structural_bad.tolist() + parsed_bad)
    counts = Counter(lines=n_lines, malformed_lines=len(bad), matched=len(out), date_filtered=date_filtered,
                     parsed=len(candidates))
    first_bad = base + int(starts[bad[0]]) if bad else -1
    if spec.pseudonymise and out:
        out = pseudonymise_many(out, Pseudonymiser(spec.key), spec.rules)
    return out, counts, first_bad


_SPEC: DumpSpec | None = None


def _init_worker(spec: DumpSpec) -> None:
    global _SPEC
    _SPEC = spec


def _work_block(base: int, block: bytes, kind: str | None) -> tuple[list[dict[str, Any]], Counter, int]:
    assert _SPEC is not None
    return parse_block(block, base, kind, _SPEC)


def _sniff_kind(block: bytes) -> str | None:
    for line in block.split(b"\n", 50)[:50]:
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(d, dict):
            return "c" if "link_id" in d or "body" in d else "s"
    return None


@dataclass
class DumpResult:
    path: str
    kind: str | None
    records: list[dict[str, Any]]
    counts: Counter
    first_malformed: int


def read_dump(path: str | Path, spec: DumpSpec, workers: int = 1, block_bytes: int = BLOCK_BYTES) -> DumpResult:
    """Read one dump file; records come back pseudonymised (spec.pseudonymise) and in file order."""
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"{path}: dump file not found")
    kind = file_kind(path)
    counts = _empty_counts()
    records: list[dict[str, Any]] = []
    first_bad = -1

    def take(res: tuple[list[dict[str, Any]], Counter, int]) -> None:
        nonlocal first_bad
        recs, c, fb = res
        records.extend(recs)
        counts.update(c)
        if first_bad < 0 and fb >= 0:
            first_bad = fb

    blocks = iter_blocks(path, block_bytes)
    parallel = workers > 1 and path.stat().st_size >= PARALLEL_MIN_BYTES
    with _no_gc():  # also while unpickling the workers' records
        kind = _drive(blocks, parallel, workers, spec, kind, take)
    log.info("%s: %d lines, %d kept, %d malformed", path.name, counts["lines"], counts["matched"], counts["malformed_lines"])
    return DumpResult(str(path), kind, records, counts, first_bad)


def _drive(blocks: Iterator[tuple[int, bytes]], parallel: bool, workers: int, spec: DumpSpec, kind: str | None,
           take: Any) -> str | None:
    """Feed blocks to parse_block, in process or on a pool with a bounded in-flight window; results in order.
    Returns the file kind (sniffed from the first block when the name did not say)."""
    if not parallel:
        for base, block in blocks:
            kind = kind or _sniff_kind(block)
            take(parse_block(block, base, kind, spec))
    else:
        ctx = _mp_context()
        with ctx.Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:
            pending: deque = deque()
            err: DumpError | None = None
            try:
                for base, block in blocks:
                    kind = kind or _sniff_kind(block)
                    pending.append(pool.apply_async(_work_block, (base, block, kind)))
                    if len(pending) >= 2 * workers:  # bounded: a 100 GB dump must not queue up in memory
                        take(pending.popleft().get())
            except DumpError as e:
                err = e
            while pending:
                take(pending.popleft().get())
            if err is not None:
                raise err
    return kind


def check_malformed(res: DumpResult, max_fraction: float) -> None:
    """Fail when a file's malformed lines exceed the params threshold; the message names file and first offset."""
    n, bad = res.counts["lines"], res.counts["malformed_lines"]
    if bad and bad > max_fraction * max(n, 1):
        raise DumpError(
            f"{res.path}: {bad} malformed lines of {n} ({bad / max(n, 1):.3%}) exceed crawl.max_malformed_fraction="
            f"{max_fraction} (first near decompressed byte {res.first_malformed}); repair the file or raise the threshold"
        )


def _mp_context() -> Any:
    """fork where the platform has it: workers start in milliseconds instead of re-importing numpy & co (spawn
    costs ~0.5 s per worker, as much as parsing 20 MB). The children only parse bytes: no locks, no logging."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _read_one(args: tuple[str, DumpSpec, int]) -> DumpResult:
    path, spec, block = args
    return read_dump(path, spec, 1, block)


def read_dumps(paths: list[str | Path], spec: DumpSpec, workers: int = 1, block_bytes: int = BLOCK_BYTES) -> list[DumpResult]:
    """Several files: one per worker when there are enough files, else each file split across the workers."""
    if workers > 1 and len(paths) >= workers:
        with _mp_context().Pool(workers) as pool:
            return pool.map(_read_one, [(str(p), spec, block_bytes) for p in paths], chunksize=1)
    return [read_dump(p, spec, workers, block_bytes) for p in paths]


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def date_to_epoch(s: str | None, end_of_day: bool = False) -> int | None:
    """'YYYY-MM-DD' (UTC) -> epoch seconds; `end_of_day` gives the start of the next day (exclusive bound)."""
    if s is None or s == "":
        return None
    import datetime as dt

    if not _DATE.match(s):
        raise CrawlError(f"date {s!r} is not YYYY-MM-DD")
    d = dt.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    if end_of_day:
        d += dt.timedelta(days=1)
    return int(d.timestamp())


def as_part(res: DumpResult) -> tuple[str, list[dict[str, Any]], Counter]:
    """A DumpResult as a `tasks.crawl.finish` input: ("dump", records, stats counters)."""
    what = "submissions" if res.kind == "s" else "comments"
    c: Counter = Counter()
    c[f"{what}_read"] = res.counts["lines"]
    c[f"{what}_matched"] = res.counts["matched"]
    c["malformed_lines"] = res.counts["malformed_lines"]
    c["date_filtered"] = res.counts["date_filtered"]
    c["dump_files"] = 1
    return "dump", res.records, c
