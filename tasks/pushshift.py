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

import logging
import multiprocessing as mp
import re
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zstandard

from tasks.crawl import (
    CrawlError,
    Pseudonymiser,
    ThreadRules,
    normalise_comment,
    normalise_submission,
    pseudonymise_record,
)

log = logging.getLogger(__name__)

MAX_WINDOW = 2**31  # Pushshift monthly dumps are written with --long=31
READ_BYTES = 1 << 22  # compressed bytes per read
BLOCK_BYTES = 1 << 24  # decompressed bytes per parse block (one unit of work for a worker)
PARALLEL_MIN_BYTES = 8 << 20  # below this a pool costs more than it saves


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


def _structural_malformed(block: bytes, n_lines: int) -> int:
    """Lower bound of malformed lines without parsing: a JSON object line starts with `{` and ends with `}`."""
    starts = block.startswith(b"{") + block.count(b"\n{")
    ends = block.count(b"}\n") + block.count(b"}\r\n") + (block.endswith(b"}"))
    return max(n_lines - starts, n_lines - ends, 0)


def parse_block(block: bytes, base: int, kind: str | None, spec: DumpSpec) -> tuple[list[dict[str, Any]], Counter, int]:
    """One block -> (kept normalised records, counters, decompressed offset of the first malformed line or -1)."""
    counts = _empty_counts()
    empty = block.count(b"\n\n") + block.startswith(b"\n")
    n_lines = block.count(b"\n") + (not block.endswith(b"\n")) - empty
    counts["lines"] = n_lines
    out: list[dict[str, Any]] = []
    first_bad = -1
    sub = spec.subreddit.lower() if spec.subreddit else None

    def handle(line: bytes, at: int) -> None:
        nonlocal first_bad
        counts["parsed"] += 1
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError:
            d = None
        if not isinstance(d, dict):
            counts["malformed_lines"] += 1
            if first_bad < 0:
                first_bad = base + at
            return
        if sub is not None and str(d.get("subreddit") or "").lower() != sub:
            return
        k = kind or ("c" if "link_id" in d or "body" in d else "s")
        rec = normalise_comment(d) if k == "c" else normalise_submission(d)
        if rec is None:
            counts["malformed_lines"] += 1
            if first_bad < 0:
                first_bad = base + at
            return
        t = rec["created_utc"]
        if (spec.since is not None or spec.until is not None) and (
            t is None or (spec.since is not None and t < spec.since) or (spec.until is not None and t >= spec.until)
        ):
            counts["date_filtered"] += 1
            return
        counts["matched"] += 1
        out.append(rec)

    if sub is not None and spec.prefilter:
        # Only lines that contain the quoted name can match; `lower()` keeps byte offsets (ASCII only).
        low = block.lower()
        needle = b'"' + sub.encode("utf-8") + b'"'
        pos = low.find(needle)
        malformed_guess = _structural_malformed(block, n_lines)
        parsed_bad = 0
        while pos >= 0:
            start = low.rfind(b"\n", 0, pos) + 1
            end = low.find(b"\n", pos)
            end = len(block) if end < 0 else end
            before = counts["malformed_lines"]
            handle(block[start:end].rstrip(b"\r"), start)
            if counts["malformed_lines"] > before and block[start:start + 1] == b"{" and block[start:end].rstrip().endswith(b"}"):
                parsed_bad += 1  # invalid JSON the structural check could not see
            pos = low.find(needle, end)
        # Candidate lines' bad ones that look structurally fine are added to the structural count of all lines.
        counts["malformed_lines"] = malformed_guess + parsed_bad
        if first_bad < 0 and malformed_guess:
            first_bad = base + _first_structural_bad(block)
    else:
        at = 0
        for line in block.split(b"\n"):
            if line.strip():
                handle(line, at)
            at += len(line) + 1
    if spec.pseudonymise:
        pseudo = Pseudonymiser(spec.key)
        out = [pseudonymise_record(r, pseudo, spec.rules) for r in out]
    return out, counts, first_bad


def _first_structural_bad(block: bytes) -> int:
    at = 0
    for line in block.split(b"\n"):
        s = line.rstrip(b"\r")
        if s.strip() and not (s.startswith(b"{") and s.endswith(b"}")):
            return at
        at += len(line) + 1
    return 0


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
    if not parallel:
        for base, block in blocks:
            kind = kind or _sniff_kind(block)
            take(parse_block(block, base, kind, spec))
    else:
        # spawn, not fork: the caller may be a multi-threaded Prefect worker.
        ctx = mp.get_context("spawn")
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
    log.info("%s: %d lines, %d kept, %d malformed", path.name, counts["lines"], counts["matched"], counts["malformed_lines"])
    return DumpResult(str(path), kind, records, counts, first_bad)


def check_malformed(res: DumpResult, max_fraction: float) -> None:
    """Fail when a file's malformed lines exceed the params threshold; the message names file and first offset."""
    n, bad = res.counts["lines"], res.counts["malformed_lines"]
    if bad and bad > max_fraction * max(n, 1):
        raise DumpError(
            f"{res.path}: {bad} malformed lines of {n} ({bad / max(n, 1):.3%}) exceed crawl.max_malformed_fraction="
            f"{max_fraction} (first near decompressed byte {res.first_malformed}); repair the file or raise the threshold"
        )


def _read_one(args: tuple[str, DumpSpec, int]) -> DumpResult:
    path, spec, block = args
    return read_dump(path, spec, 1, block)


def read_dumps(paths: list[str | Path], spec: DumpSpec, workers: int = 1, block_bytes: int = BLOCK_BYTES) -> list[DumpResult]:
    """Several files: one per worker when there are enough files, else each file split across the workers."""
    if workers > 1 and len(paths) >= workers:
        with mp.get_context("spawn").Pool(workers) as pool:
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
