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
import threading
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
READ_BYTES = 1 << 18  # compressed bytes per read: bounds each decompress() output (ratio x this)
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
class _Truncated(Exception):
    def __init__(self, consumed: int):
        self.consumed = consumed


def _outputs(path: Path, read_bytes: int) -> Iterator[bytes]:
    """Decompressed pieces of every frame, in order. Each read of `read_bytes` compressed bytes bounds the size of
    one piece (ratio x read). Raises _Truncated(compressed bytes consumed) when the file ends inside a frame."""
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    dobj = dctx.decompressobj()
    in_frame = False  # bytes of an unfinished frame were fed
    consumed = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(read_bytes):
            data = chunk
            while data:
                try:
                    out = dobj.decompress(data)
                except zstandard.ZstdError as e:
                    raise DumpError(f"{path}: corrupt zstd data in compressed bytes {consumed}-{consumed + len(chunk)}: "
                                    f"{e}; re-download or re-compress the file") from None
                in_frame = True
                if dobj.eof:  # frame done; the rest of `data` starts the next frame
                    data = dobj.unused_data
                    dobj = dctx.decompressobj()
                    in_frame = False
                else:
                    data = b""
                if out:
                    yield out
            consumed += len(chunk)
    if in_frame:
        raise _Truncated(consumed)


def iter_spans(path: Path, max_span: int = BLOCK_BYTES, read_bytes: int = READ_BYTES) -> Iterator[tuple[int, bytes, int, int]]:
    """Yield (decompressed offset of buf[a], buf, a, b): whole lines buf[a:b], without copying the decompressor's
    output (only a line split across two pieces is glued into a small buffer of its own).

    Raises DumpError naming the file and offsets when the stream is corrupt or ends inside a frame.
    """
    carry = b""
    offset = 0
    try:
        for out in _outputs(path, read_bytes):
            start = 0
            if carry:
                nl = out.find(b"\n")
                if nl < 0:  # a line longer than this piece
                    carry += out
                    continue
                head = carry + out[: nl + 1]
                yield offset, head, 0, len(head)
                offset += len(head)
                carry, start = b"", nl + 1
            end = out.rfind(b"\n") + 1
            while end - start > max_span:  # split big pieces on newlines, still without copying
                cut = out.rfind(b"\n", start, start + max_span) + 1
                if cut <= start:
                    cut = out.find(b"\n", start + max_span) + 1
                yield offset, out, start, cut
                offset += cut - start
                start = cut
            if end > start:
                yield offset, out, start, end
                offset += end - start
                start = end
            carry = out[start:] if start < len(out) else b""
    except _Truncated as t:
        raise DumpError(
            f"{path}: truncated: the zstd stream ends inside a frame at compressed byte {t.consumed} "
            f"(decompressed byte {offset + len(carry)}, last complete line ends at byte {offset}); "
            "the file is incomplete: download it again"
        ) from None
    if carry:  # last line without its newline
        yield offset, carry, 0, len(carry)


def iter_blocks(path: Path, block_bytes: int = BLOCK_BYTES, read_bytes: int = READ_BYTES) -> Iterator[tuple[int, bytes]]:
    """(decompressed offset, bytes of whole lines): `iter_spans` with each span copied out."""
    for off, buf, a, b in iter_spans(path, block_bytes, read_bytes):
        yield off, (buf if a == 0 and b == len(buf) else buf[a:b])


# ------------------------------------------------------------------------------------------------ parsing
def _empty_counts() -> Counter:
    return Counter(lines=0, malformed_lines=0, matched=0, date_filtered=0, parsed=0)


def _line_table(block: bytes, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, structurally_ok) of the non-empty lines of block[a:b] (absolute offsets), vectorised: a JSON
    object line starts with `{` and ends with `}` (before an optional \r). No copy of the bytes."""
    arr = np.frombuffer(block, np.uint8, count=b - a, offset=a)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate((np.zeros(1, np.int64), nl + 1))
    ends = np.concatenate((nl, np.array([b - a], np.int64)))
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
    return starts + a, ends + a, ok


def parse_block(block: bytes, base: int, kind: str | None, spec: DumpSpec, a: int = 0,
                b: int | None = None) -> tuple[list[dict[str, Any]], Counter, int]:
    """Lines block[a:b] (decompressed offset of block[a] = base) -> (kept normalised records, counters, decompressed
    offset of the first malformed line or -1)."""
    b = len(block) if b is None else b
    if 2 * (b - a) < len(block):  # a small part of a big buffer: copy it rather than lower() the whole buffer
        block, a, b = block[a:b], 0, b - a
    with _no_gc():
        return _parse_block(block, base, kind, spec, a, b)


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


def _sparse_candidates(block: bytes, low: bytes, needle: bytes, a: int, b: int) -> tuple[list[int], list[int], int] | None:
    """The fast path of "parse only what can match": (starts, ends) of the lines of block[a:b] that contain the
    needle, and the line count, from two vectorised passes and per-hit work only. None when it does not apply (the
    needle is frequent, or some line does not end in `}`: then the exact per-line structural check runs)."""
    arr = np.frombuffer(block, np.uint8, count=b - a, offset=a)
    nl = np.flatnonzero(arr == 10)
    n_lines = len(nl) + (b > a and arr[-1] != 10)
    if len(nl) and (nl[0] == 0 or np.count_nonzero(arr[nl - 1] == 125) != len(nl)):
        return None  # an empty line or one not ending in `}` (\r\n endings included): exact path
    if n_lines > len(nl) and arr[-1] != 125:
        return None
    starts: list[int] = []
    ends: list[int] = []
    limit = max(16, n_lines // 4)  # beyond this many hits a plain pass over every line is cheaper
    pos = low.find(needle, a, b)
    while pos >= 0:
        s = block.rfind(b"\n", a, pos) + 1
        s = max(s, a)
        e = block.find(b"\n", pos, b)
        e = b if e < 0 else e
        starts.append(s)
        ends.append(e)
        if len(starts) > limit:
            return None
        pos = low.find(needle, e, b)
    return starts, ends, n_lines


def _parse_block(block: bytes, base: int, kind: str | None, spec: DumpSpec, a: int,
                 b: int) -> tuple[list[dict[str, Any]], Counter, int]:
    sub = spec.subreddit.lower() if spec.subreddit else None
    prefilter = sub is not None and spec.prefilter
    if prefilter:
        low = block.lower()  # ASCII lower keeps byte offsets
        needle = b'"' + sub.encode("utf-8") + b'"'
    sparse = _sparse_candidates(block, low, needle, a, b) if prefilter else None
    structural: list[int] = []
    if sparse is not None:
        cand_starts, cand_ends, n_lines = sparse
    else:
        starts, ends, ok = _line_table(block, a, b)
        n_lines = len(starts)
        candidates = np.flatnonzero(ok)
        if prefilter and low.count(needle, a, b) * 4 < n_lines:
            # Structure irregular: per-line table, but still parse only lines that contain the name.
            hits = []
            pos = low.find(needle, a, b)
            while pos >= 0:
                hits.append(pos)
                pos = low.find(needle, pos + len(needle), b)
            idx = np.unique(np.searchsorted(starts, np.asarray(hits, np.int64), side="right") - 1)
            candidates = idx[ok[idx]] if len(idx) else idx
        structural = starts[~ok].tolist()  # offsets of lines that cannot be JSON objects
        cand_starts, cand_ends = starts[candidates].tolist(), ends[candidates].tolist()
    out: list[dict[str, Any]] = []
    parsed_bad: list[int] = []
    date_filtered = 0
    since, until = spec.since, spec.until
    dated = since is not None or until is not None
    norm_c, norm_s, loads = normalise_comment, normalise_submission, orjson.loads
    for s, e in zip(cand_starts, cand_ends, strict=True):
        try:
            d = loads(block[s:e])
        except orjson.JSONDecodeError:
            parsed_bad.append(s)
            continue
        if type(d) is not dict:
            parsed_bad.append(s)
            continue
        if sub is not None:
            name = d.get("subreddit")
            if name is None or (name != sub and str(name).lower() != sub):
                continue
        k = kind or ("c" if "link_id" in d or "body" in d else "s")
        rec = norm_c(d) if k == "c" else norm_s(d)
        if rec is None:
            parsed_bad.append(s)
            continue
        if dated:
            t = rec["created_utc"]
            if t is None or (since is not None and t < since) or (until is not None and t >= until):
                date_filtered += 1
                continue
        out.append(rec)
    bad = structural + parsed_bad
    counts = Counter(lines=n_lines, malformed_lines=len(bad), matched=len(out), date_filtered=date_filtered,
                     parsed=len(cand_starts))
    first_bad = base + min(bad) - a if bad else -1
    if spec.pseudonymise and out:
        out = pseudonymise_many(out, Pseudonymiser(spec.key), spec.rules)
    return out, counts, first_bad


_SPEC: DumpSpec | None = None
_SLOTS: list[Any] = []  # shared-memory slots, created before the fork: children inherit the mappings
_SLOTS_LOCK = threading.Lock()  # one shared-memory pool at a time per process (Prefect may run tasks in threads)


def _init_worker(spec: DumpSpec) -> None:
    global _SPEC
    _SPEC = spec


def _work_block(base: int, block: bytes, kind: str | None) -> tuple[bytes, Counter, int]:
    """Pool job (pipe transport): records travel back as one orjson blob, not as pickled dicts."""
    assert _SPEC is not None
    recs, counts, first_bad = parse_block(block, base, kind, _SPEC)
    return orjson.dumps(recs), counts, first_bad


def _work_slot(slot: int, n: int, base: int, kind: str | None) -> tuple[int | bytes, Counter, int]:
    """Pool job (shared-memory transport): the block is read from slot `slot`; the records blob is written back
    into the same slot when it fits (else returned through the pipe)."""
    assert _SPEC is not None
    shm = _SLOTS[slot]
    block = bytes(shm.buf[:n])
    recs, counts, first_bad = parse_block(block, base, kind, _SPEC)
    blob = orjson.dumps(recs)
    if len(blob) <= shm.size:
        shm.buf[: len(blob)] = blob
        return len(blob), counts, first_bad
    return blob, counts, first_bad


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

    spans = iter_spans(path, block_bytes)
    parallel = workers > 1 and path.stat().st_size >= PARALLEL_MIN_BYTES
    with _no_gc():  # also while unpickling the workers' records
        kind = _drive(spans, parallel, workers, spec, kind, take, block_bytes)
    log.info("%s: %d lines, %d kept, %d malformed", path.name, counts["lines"], counts["matched"], counts["malformed_lines"])
    return DumpResult(str(path), kind, records, counts, first_bad)


def _drive(spans: Iterator[tuple[int, bytes, int, int]], parallel: bool, workers: int, spec: DumpSpec,
           kind: str | None, take: Any, block_bytes: int) -> str | None:
    """Parse the spans in process (no copy), or glue them into ~block_bytes jobs for a pool with a bounded
    in-flight window; results in file order. Returns the file kind (sniffed when the name did not say)."""
    if not parallel:
        for base, buf, a, b in spans:
            kind = kind or _sniff_kind(buf[a:min(b, a + 65536)])
            take(parse_block(buf, base, kind, spec, a, b))
        return kind
    if _mp_context().get_start_method() == "fork":
        with _SLOTS_LOCK:
            return _drive_shared(spans, workers, spec, kind, take, block_bytes)
    with _mp_context().Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:
        pending: deque = deque()
        err: DumpError | None = None
        job: list[bytes] = []
        job_base, job_size = 0, 0

        def submit() -> None:
            nonlocal job, job_size
            if job:
                pending.append(pool.apply_async(_work_block, (job_base, b"".join(job), kind)))
                job, job_size = [], 0
            while len(pending) >= 2 * workers:  # bounded: a 100 GB dump must not queue up in memory
                take(_decode(pending.popleft().get()))

        try:
            for base, buf, a, b in spans:
                kind = kind or _sniff_kind(buf[a:min(b, a + 65536)])
                if not job:
                    job_base = base
                job.append(buf[a:b] if a or b != len(buf) else buf)
                job_size += b - a
                if job_size >= block_bytes:
                    submit()
            submit()
        except DumpError as e:
            submit()
            err = e
        while pending:
            take(_decode(pending.popleft().get()))
        if err is not None:
            raise err
    return kind


def _drive_shared(spans: Iterator[tuple[int, bytes, int, int]], workers: int, spec: DumpSpec, kind: str | None,
                  take: Any, block_bytes: int) -> str | None:
    """Pool over shared-memory slots: the main process decompresses straight into a slot (one memcpy) and sends
    only (slot, length); workers write their records blob back into the slot. Pipes carry a few bytes per job, so
    no 64 KiB pipe ping-pong between processes and no GIL fight with Pool's feeder threads (measured 2x slower)."""
    from multiprocessing import shared_memory

    global _SLOTS
    window = 2 * workers
    size = 2 * block_bytes + (1 << 20)  # a job is < block_bytes + one span (<= block_bytes)
    _SLOTS = [shared_memory.SharedMemory(create=True, size=size) for _ in range(window)]
    free = deque(range(window))
    pending: deque = deque()
    try:
        with _mp_context().Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:

            def take_one() -> None:
                slot, res = pending.popleft()
                payload, counts, first_bad = res.get()
                recs = orjson.loads(_SLOTS[slot].buf[:payload] if isinstance(payload, int) else payload)
                free.append(slot)
                take((recs, counts, first_bad))

            def submit(parts: list[tuple[bytes, int, int]], base: int) -> None:
                if not free:
                    take_one()
                slot = free.popleft()
                view, pos = _SLOTS[slot].buf, 0
                for buf, a, b in parts:
                    view[pos:pos + b - a] = memoryview(buf)[a:b]
                    pos += b - a
                pending.append((slot, pool.apply_async(_work_slot, (slot, pos, base, kind))))

            job: list[tuple[bytes, int, int]] = []
            job_base = job_size = 0
            err: DumpError | None = None
            try:
                for base, buf, a, b in spans:
                    kind = kind or _sniff_kind(buf[a:min(b, a + 65536)])
                    if job and job_size + (b - a) > size:
                        submit(job, job_base)
                        job, job_size = [], 0
                    if not job:
                        job_base = base
                    job.append((buf, a, b))
                    job_size += b - a
                    if job_size >= block_bytes:
                        submit(job, job_base)
                        job, job_size = [], 0
            except DumpError as e:
                err = e
            if job:
                submit(job, job_base)
            while pending:
                take_one()
            if err is not None:
                raise err
    finally:
        for shm in _SLOTS:
            shm.close()
            shm.unlink()
        _SLOTS = []
    return kind


def _decode(res: tuple[bytes, Counter, int]) -> tuple[list[dict[str, Any]], Counter, int]:
    blob, counts, first_bad = res
    return orjson.loads(blob), counts, first_bad


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
