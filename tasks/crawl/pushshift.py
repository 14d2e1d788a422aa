"""Pushshift dump reader: `RC_*/RS_*.zst` monthly dumps and `<sub>_comments/_submissions.zst` extracts.

* Streaming zstd with a 2**31 window (the monthly dumps need it), frame by frame, so multi-frame files work too.
* Decompressed bytes are cut into blocks on line boundaries and parsed as *bytes*: a multi-byte UTF-8 character
  split across two reads can never break a line (b"\\n" never occurs inside a multi-byte sequence), so there is no
  decode-and-retry dance.
* msgspec decodes each line into a struct of the dozen fields the records need, skipping the other ~40 keys
  without building them; a block whose lines are regular is decoded in one call. Drifting fields are normalised
  (tasks.crawl.crawl.comment_record/submission_record); subreddit and date filters apply. A dense comment block whose
  lines already have the normalised types skips the per-line normaliser (`_canonical_comments`).
* "Parse only what can match": with a subreddit filter, only lines that contain `"<name>"` (ASCII
  case-insensitive) are parsed; the others are checked structurally (`{` ... `}`) for the malformed count.
* Both cores: with 2 workers a forked child decompresses (python-zstandard holds the GIL, so a thread would
  not overlap) and this process parses; with more, this process decompresses and a pool parses blocks (bounded
  in-flight window, results in file order); several files go one per worker. `iter_dump` streams batches in
  bounded memory, `read_dump` collects them. Figures: docs/CRAWL.md, benchmarks/crawl_reader.py.
* A truncated file fails with its name and byte offsets; malformed lines are counted and bounded by a threshold.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import mmap
import multiprocessing as mp
import re
import threading
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson
import zstandard

from tasks.crawl.records import (
    AuthorTable,
    CrawlError,
    Pseudonymiser,
    ThreadRules,
    comment_record,
    pseudonymise_many,
    submission_record,
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


def iter_spans(path: Path, max_span: int = BLOCK_BYTES, read_bytes: int = READ_BYTES,
               child: bool = False) -> Iterator[tuple[int, Any, int, int]]:
    """Yield (decompressed offset of buf[a], buf, a, b): whole lines buf[a:b], without copying the decompressor's
    output (only a line split across two pieces is glued into a small buffer of its own).

    `child`: decompress in a forked process (`_outputs_from_child`) so that this one only parses; `buf` is then a
    shared ring region that is reused once the next span is asked for (consume each span before the next).

    Raises DumpError naming the file and offsets when the stream is corrupt or ends inside a frame.
    """
    carry = b""
    offset = 0
    outputs = _outputs_from_child(path, read_bytes) if child else ((o, len(o)) for o in _outputs(path, read_bytes))
    try:
        for out, n in outputs:
            start = 0
            if carry:
                nl = out.find(b"\n", 0, n)
                if nl < 0:  # a line longer than this piece
                    carry += out[:n]
                    continue
                head = carry + out[: nl + 1]
                yield offset, head, 0, len(head)
                offset += len(head)
                carry, start = b"", nl + 1
            end = out.rfind(b"\n", 0, n) + 1
            while end - start > max_span:  # split big pieces on newlines, still without copying
                cut = out.rfind(b"\n", start, start + max_span) + 1
                if cut <= start:
                    cut = out.find(b"\n", start + max_span, n) + 1
                yield offset, out, start, cut
                offset += cut - start
                start = cut
            if end > start:
                yield offset, out, start, end
                offset += end - start
                start = end
            carry = out[start:n] if start < n else b""
    except _Truncated as t:
        raise DumpError(
            f"{path}: truncated: the zstd stream ends inside a frame at compressed byte {t.consumed} "
            f"(decompressed byte {offset + len(carry)}, last complete line ends at byte {offset}); "
            "the file is incomplete: download it again"
        ) from None
    if carry:  # last line without its newline
        yield offset, carry, 0, len(carry)


RING_SLOTS, RING_BYTES = 4, 4 << 20  # the child decompresses up to 4 pieces of <= 4 MiB ahead of the parser


def _outputs_from_child(path: Path, read_bytes: int) -> Iterator[tuple[mmap.mmap, int]]:
    """`_outputs` run in a forked child: (shared region, valid bytes) pieces. python-zstandard holds the GIL while
    it decompresses (measured: a decompressing thread and a parsing thread take the sum of their times), so only a
    process overlaps the two. Pieces travel through a ring of anonymous shared mappings made before the fork
    (a pipe carries only slot numbers; piping the bytes themselves cost 2.5x the decompression). A region goes
    back to the child when the next piece is asked for. The child's end (done, truncated, corrupt) arrives after
    its pieces, in order; a consumer that stops early stops the child."""
    ctx = _mp_context()
    ring = [mmap.mmap(-1, RING_BYTES) for _ in range(RING_SLOTS)]
    pieces_r, pieces_w = ctx.Pipe(duplex=False)
    free_r, free_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_decompress_child, args=(str(path), read_bytes, ring, pieces_w, free_r), daemon=True,
                       name=f"esvr-zstd-{path.name}")
    proc.start()
    pieces_w.close()
    free_r.close()
    held = -1
    try:
        while True:
            if held >= 0:
                with contextlib.suppress(BrokenPipeError):  # the child may be done and gone
                    free_w.send(held)
                held = -1
            try:
                msg = pieces_r.recv()
            except EOFError:
                raise DumpError(f"{path}: the decompression process died (exit code {proc.exitcode})") from None
            if type(msg[0]) is int:
                held = msg[0]
                yield ring[held], msg[1]
                continue
            status, detail = msg
            if status == "truncated":
                raise _Truncated(detail)
            if status == "error":
                raise DumpError(detail)
            return
    finally:
        pieces_r.close()
        free_w.close()
        if proc.is_alive():
            proc.terminate()
        proc.join()
        for m in ring:
            with contextlib.suppress(BufferError):  # a view still alive: the mapping goes with it
                m.close()


def _decompress_child(path: str, read_bytes: int, ring: list[mmap.mmap], pieces: Any, free: Any) -> None:
    idle = deque(range(len(ring)))
    status: tuple[str, Any] = ("done", None)
    try:
        for out in _outputs(Path(path), read_bytes):
            view, pos = memoryview(out), 0
            while pos < len(view):  # a piece bigger than a region goes in several
                if not idle:
                    idle.append(free.recv())
                slot = idle.popleft()
                n = min(len(view) - pos, RING_BYTES)
                ring[slot][:n] = view[pos:pos + n]
                pieces.send((slot, n))
                pos += n
    except _Truncated as t:
        status = ("truncated", t.consumed)
    except DumpError as e:
        status = ("error", str(e))
    except (BrokenPipeError, EOFError):  # the parent stopped reading: nothing to report
        return
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        status = ("error", f"{path}: decompression failed: {e!r}")
    with contextlib.suppress(BrokenPipeError):
        pieces.send(status)


def iter_blocks(path: Path, block_bytes: int = BLOCK_BYTES, read_bytes: int = READ_BYTES) -> Iterator[tuple[int, bytes]]:
    """(decompressed offset, bytes of whole lines): `iter_spans` with each span copied out."""
    for off, buf, a, b in iter_spans(path, block_bytes, read_bytes):
        yield off, (buf if a == 0 and b == len(buf) else buf[a:b])


# ------------------------------------------------------------------------------------------------ parsing
def _empty_counts() -> Counter:
    return Counter(lines=0, malformed_lines=0, matched=0, date_filtered=0, parsed=0)


class _Line(msgspec.Struct, gc=False):
    """The fields of a dump line that either record kind reads. Decoding into it skips every other key without
    building it (3x less work than a full dict on the dumps' ~40-key lines); `Any` keeps the drift tolerance of the
    normalisers (ids and times arrive as int, float, str or null across dump years)."""

    id: Any = None
    name: Any = None
    link_id: Any = None
    parent_id: Any = None
    subreddit: Any = None
    author: Any = None
    created_utc: Any = None
    created: Any = None
    body: Any = None
    title: Any = None
    selftext: Any = None


_DECODER = msgspec.json.Decoder(_Line)
_BAD_LINE = (msgspec.DecodeError, msgspec.ValidationError)
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _CanonicalComment(msgspec.Struct, gc=False, kw_only=True, rename={"kind": "esvr:kind", "text": "body"}):
    """A comment line whose fields already have their normalised types: for it `tasks.crawl.crawl.comment_record` is the
    identity (checked in `_canonical_comments`), so `asdict` of this struct *is* the record, built in C with the
    same keys in the same order. Lines that do not fit (a missing or empty id, a float or string time, a null
    author, ...) fail the block's decode and take the general path. `kind` is never read from the line."""

    kind: str = "c"
    id: _NonEmpty
    link_id: str
    parent_id: _NonEmpty
    subreddit: str
    author: str
    created_utc: int
    text: str


class _CanonicalCommentPseudo(_CanonicalComment, rename={"kind": "esvr:kind", "text": "body", "bot": "esvr:bot"}):
    """The same with the `bot` flag that pseudonymisation adds (last, as `pseudonymise_many` adds it)."""

    bot: bool = False


_CANONICAL: dict[bool, msgspec.json.Decoder[Any]] = {
    False: msgspec.json.Decoder(_CanonicalComment), True: msgspec.json.Decoder(_CanonicalCommentPseudo)}


def _canonical_comments(view: memoryview, n_lines: int, sub: str | None, since: int | None, until: int | None,
                        names: AuthorTable | None) -> tuple[list[dict[str, Any]], int] | None:
    """The dense fast path for comment blocks: (records in the subreddit and date range, pseudonymised when `names`
    is given; date-filtered count), or None when some line is not canonical (then the general path decides every
    line)."""
    try:
        lines = _CANONICAL[names is not None].decode_lines(view)
    except _BAD_LINE:
        return None
    if len(lines) != n_lines:
        return None
    if sub is not None:
        lines = [ln for ln in lines if ln.subreddit == sub or ln.subreddit.lower() == sub]
    n = len(lines)
    if since is not None:
        lines = [ln for ln in lines if ln.created_utc >= since]
    if until is not None:
        lines = [ln for ln in lines if ln.created_utc < until]
    for ln in lines:  # comment_record would rewrite these two: not the identity, general path
        if ln.id[:3] == "t1_" or ln.link_id[:3] != "t3_":
            return None
    if names is not None:  # `pseudonymise_many` on the structs, in the same pass
        scrub = names.pseudo.scrub
        for ln in lines:
            ln.author, ln.bot = names[ln.author]  # type: ignore[attr-defined]
            if "u/" in ln.text:
                ln.text = scrub(ln.text)
    asdict = msgspec.structs.asdict
    return [asdict(ln) for ln in lines], n - len(lines)


@functools.cache
def _authors(key: bytes, rules: ThreadRules) -> AuthorTable:
    """One author table per key and process: a name is hashed once per dump (and per run), not once per block."""
    return AuthorTable(Pseudonymiser(key), rules)


def _names(spec: DumpSpec) -> AuthorTable | None:
    if not spec.pseudonymise:
        return None
    table = _authors(spec.key, spec.rules)
    if len(table) > 2_000_000:  # bound the memory of a long-lived process; decisions are recomputed, not changed
        table.clear()
    return table


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


def _regular_lines(arr: np.ndarray) -> int:
    """The line count when every line of `arr` is non-empty and ends in `}` (the dumps' shape), else -1. With it,
    a whole-block decode that yields exactly this many objects has decoded one object per line (an empty line or
    two objects on one line would change the count), so per-line checks are not needed."""
    nl = np.flatnonzero(np.equal(arr, 10, out=_scratch(len(arr))[2]))
    n = len(nl)
    if n and (nl[0] == 0 or np.count_nonzero(arr[nl - 1] == 125) != n):
        return -1
    if len(arr) and arr[-1] != 10:  # last line without its newline
        if arr[-1] != 125:
            return -1
        n += 1
    return n


_LOCAL = threading.local()


def _scratch(n: int) -> tuple[bytearray, np.ndarray, np.ndarray]:
    """Per-thread scratch buffers of >= n bytes, reused across blocks: a fresh 16 MB array per vectorised pass
    costs more in page faults than the pass itself (measured: fold 0.14 s -> 0.02 s per 200 MB)."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or len(buf[0]) < n:
        raw = bytearray(max(n, 1 << 20))
        buf = _LOCAL.buf = (raw, np.frombuffer(raw, np.uint8), np.zeros(len(raw), bool))
    return buf[0], buf[1][:n], buf[2][:n]


def parse_block(block: bytes, base: int, kind: str | None, spec: DumpSpec, a: int = 0,
                b: int | None = None) -> tuple[list[dict[str, Any]], Counter, int]:
    """Lines block[a:b] (decompressed offset of block[a] = base) -> (kept normalised records, counters, decompressed
    offset of the first malformed line or -1)."""
    b = len(block) if b is None else b
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


def _fold(arr: np.ndarray) -> bytearray:
    """ASCII case folding as one vectorised OR into a reused buffer (8x faster than bytes.lower()): `x | 0x20` maps
    A-Z to a-z and leaves digits and `"` alone; other bytes may collide (`_` and DEL), which can only add
    candidates, never lose one, and every candidate is decoded and compared exactly. The buffer may be longer than
    `arr`: search it with an end bound."""
    raw, u8, _ = _scratch(len(arr))
    np.bitwise_or(arr, 0x20, out=u8)
    return raw


def _needle(sub: str) -> bytes:
    return bytes(c | 0x20 for c in b'"' + sub.encode("utf-8") + b'"')


def _sparse_candidates(block: bytes, a: int, b: int, n_lines: int, folded: bytearray,
                       needle: bytes) -> tuple[list[int], list[int], int] | None:
    """The fast path of "parse only what can match": (starts, ends) relative to `a` of the lines of block[a:] that
    contain the needle (searched in `folded`, the folded bytes), and the line count, from vectorised passes and
    per-hit work only. None when it does not apply (the needle is frequent, or the lines are irregular,
    `n_lines` < 0: then another path runs). Newlines are looked up in the raw bytes (folding maps `\\n` to `*`)."""
    if n_lines < 0:
        return None
    starts: list[int] = []
    ends: list[int] = []
    limit = max(16, n_lines // 8)  # beyond this many hits decoding every line is cheaper
    end = b - a
    probe = min(end, 1 << 16)  # a dense block shows in its first 64 KiB: skip the hit-by-hit walk
    if folded.count(needle, 0, probe) * end > 2 * limit * probe:
        return None
    pos = folded.find(needle, 0, end)
    while pos >= 0:
        s = block.rfind(b"\n", a, a + pos) + 1 - a
        s = max(s, 0)
        e = block.find(b"\n", a + pos, a + end) - a
        e = end if e < 0 else e
        starts.append(s)
        ends.append(e)
        if len(starts) > limit:
            return None
        pos = folded.find(needle, e, end)
    return starts, ends, n_lines


def _parse_block(block: bytes, base: int, kind: str | None, spec: DumpSpec, a: int,
                 b: int) -> tuple[list[dict[str, Any]], Counter, int]:
    sub = spec.subreddit.lower() if spec.subreddit else None
    view = memoryview(block)[a:b]
    arr = np.frombuffer(block, np.uint8, count=b - a, offset=a)
    lines: list[_Line] = []
    at: list[int] = []  # offset (relative to a) of each decoded line where known (per-line paths)
    bad: list[int] = []  # offsets (relative to a) of malformed lines; -1 where unknown
    n_lines = -1
    parsed = 0
    n_regular = _regular_lines(arr)
    if sub is not None and spec.prefilter:
        sparse = _sparse_candidates(block, a, b, n_regular, _fold(arr), _needle(sub)) if n_regular >= 0 else None
        if sparse is not None:
            starts, ends, n_lines = sparse
            lines, at, bad = _decode_each(view, starts, ends)
            parsed = len(starts)
    out: list[dict[str, Any]] = []
    date_filtered = 0
    since, until = spec.since, spec.until
    fast = None
    if n_lines < 0 and n_regular >= 0 and kind == "c":  # dense comment block: records straight from the decoder
        fast = _canonical_comments(view, n_regular, sub, since, until, _names(spec))
    if fast is not None:
        out, date_filtered = fast
        n_lines = parsed = n_regular
    elif n_lines < 0:  # dense block: one whole-block decode when the lines are regular
        n = n_regular
        if n >= 0:
            try:
                lines = _DECODER.decode_lines(view)
            except _BAD_LINE:
                lines = []
            else:
                n_lines = parsed = n if len(lines) == n else -1
    if n_lines < 0:  # irregular lines or a malformed one: exact per-line path
        starts_a, ends_a, ok = _line_table(block, a, b)
        n_lines = len(starts_a)
        cand = np.flatnonzero(ok)
        bad = (starts_a[~ok] - a).tolist()  # lines that cannot be JSON objects
        lines, at, bad_parsed = _decode_each(view, (starts_a[cand] - a).tolist(), (ends_a[cand] - a).tolist())
        bad += bad_parsed
        parsed = len(cand)
    dated = since is not None or until is not None
    comment, submission = comment_record, submission_record
    for i, ln in enumerate(lines):  # the hot loop of dense blocks: one call per line, no helper in between
        if sub is not None:
            name = ln.subreddit
            if name != sub and (name is None or str(name).lower() != sub):
                continue
        t = ln.created_utc
        if t is None:
            t = ln.created
        if kind == "c" or (kind is None and (ln.link_id is not None or ln.body is not None)):
            rec = comment(ln.id or ln.name, ln.link_id, ln.parent_id, t, ln.author, ln.body, ln.subreddit)
        else:
            rec = submission(ln.id or ln.name, ln.subreddit, ln.author, t, ln.title, ln.selftext)
        if rec is None:
            bad.append(at[i] if at else -1)  # decoded but unusable (no id); the whole-block path has no offsets
            continue
        if dated:
            t = rec["created_utc"]
            if t is None or (since is not None and t < since) or (until is not None and t >= until):
                date_filtered += 1
                continue
        out.append(rec)
    counts = Counter(lines=n_lines, malformed_lines=len(bad), matched=len(out), date_filtered=date_filtered,
                     parsed=parsed)
    offs = [x for x in bad if x >= 0]
    first_bad = base + min(offs) if offs else (base if bad else -1)
    if fast is None and spec.pseudonymise and out:
        names = _names(spec)
        assert names is not None
        out = pseudonymise_many(out, names.pseudo, spec.rules, names)
    return out, counts, first_bad


def _decode_each(view: memoryview, starts: list[int], ends: list[int]) -> tuple[list[_Line], list[int], list[int]]:
    """Decode the lines view[s:e] one by one: (decoded lines, their offsets, offsets of those that are not JSON
    objects)."""
    lines: list[_Line] = []
    at: list[int] = []
    bad: list[int] = []
    dec = _DECODER.decode
    for s, e in zip(starts, ends, strict=True):
        try:
            lines.append(dec(view[s:e]))
            at.append(s)
        except _BAD_LINE:
            bad.append(s)
    return lines, at, bad


_SPEC: DumpSpec | None = None
_SLOTS: list[Any] = []  # shared-memory slots, created before the fork: children inherit the mappings
_SLOTS_LOCK = threading.Lock()  # one shared-memory pool at a time per process (Prefect may run tasks in threads)


def _init_worker(spec: DumpSpec) -> None:
    global _SPEC
    _SPEC = spec


def _work_block(base: int, block: bytes, kind: str | None) -> tuple[bytes, Counter, int]:
    """Pool job (pipe transport): records travel back as one msgpack blob, not as pickled dicts."""
    assert _SPEC is not None
    recs, counts, first_bad = parse_block(block, base, kind, _SPEC)
    return _pack(recs), counts, first_bad


def _work_slot(slot: int, n: int, base: int, kind: str | None) -> tuple[int | bytes, Counter, int]:
    """Pool job (shared-memory transport): the block is read from slot `slot`; the records blob is written back
    into the same slot when it fits (else returned through the pipe)."""
    assert _SPEC is not None
    shm = _SLOTS[slot]
    block = bytes(shm.buf[:n])
    recs, counts, first_bad = parse_block(block, base, kind, _SPEC)
    blob = _pack(recs)
    if len(blob) <= shm.size:
        shm.buf[: len(blob)] = blob
        return len(blob), counts, first_bad
    return blob, counts, first_bad


_pack = msgspec.msgpack.Encoder().encode  # msgpack: 2x faster than JSON to decode back into dicts in the main process
_unpack = msgspec.msgpack.Decoder(list[dict[str, Any]]).decode


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


Batch = tuple[list[dict[str, Any]], Counter, int, "str | None"]  # records, counters, first malformed offset, kind


def iter_dump(path: str | Path, spec: DumpSpec, workers: int = 1, block_bytes: int = BLOCK_BYTES) -> Iterator[Batch]:
    """Stream one dump file: a batch per parsed block, in file order, records pseudonymised (spec.pseudonymise).
    Memory stays bounded by the in-flight blocks however big the dump is. The kind is 's'/'c' (sniffed from the
    first lines when the file name does not say)."""
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"{path}: dump file not found")
    # 2 workers: decompression in a child process, parsing here (no records cross a process boundary); more: this
    # process decompresses and a pool parses (records come back as msgpack); small files: all here.
    big = path.stat().st_size >= PARALLEL_MIN_BYTES
    split = big and workers == 2 and _mp_context().get_start_method() == "fork"
    spans = iter_spans(path, block_bytes, child=split)
    yield from _drive(spans, big and workers > 2, workers, spec, file_kind(path), block_bytes)


def read_dump(path: str | Path, spec: DumpSpec, workers: int = 1, block_bytes: int = BLOCK_BYTES) -> DumpResult:
    """Read one dump file into memory: `iter_dump` collected (fine for a subreddit's share of a monthly dump; use
    `iter_dump` to stream a whole one)."""
    path = Path(path)
    counts = _empty_counts()
    records: list[dict[str, Any]] = []
    first_bad = -1
    kind = file_kind(path)
    with _no_gc():  # also while unpacking the workers' records
        for recs, c, fb, k in iter_dump(path, spec, workers, block_bytes):
            records.extend(recs)
            counts.update(c)
            kind = kind or k
            if first_bad < 0 and fb >= 0:
                first_bad = fb
    log.info("%s: %d lines, %d kept, %d malformed", path.name, counts["lines"], counts["matched"], counts["malformed_lines"])
    return DumpResult(str(path), kind, records, counts, first_bad)


def _drive(spans: Iterator[tuple[int, Any, int, int]], parallel: bool, workers: int, spec: DumpSpec,
           kind: str | None, block_bytes: int) -> Iterator[Batch]:
    """Parse the spans in process (no copy), or glue them into ~block_bytes jobs for a pool with a bounded
    in-flight window; batches in file order."""
    if not parallel:
        for base, buf, a, b in spans:
            kind = kind or _sniff_kind(buf[a:min(b, a + 65536)])
            yield (*parse_block(buf, base, kind, spec, a, b), kind)
        return
    if _mp_context().get_start_method() == "fork":
        with _SLOTS_LOCK:
            yield from _drive_shared(spans, workers, spec, kind, block_bytes)
        return
    ready: deque = deque()  # finished batches, yielded between submissions
    with _mp_context().Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:
        pending: deque = deque()
        err: DumpError | None = None
        job: list[bytes] = []
        job_base, job_size = 0, 0

        def submit() -> None:
            nonlocal job, job_size
            if job:
                pending.append((pool.apply_async(_work_block, (job_base, b"".join(job), kind)), kind))
                job, job_size = [], 0
            while len(pending) >= 2 * workers:  # bounded: a 100 GB dump must not queue up in memory
                res, k = pending.popleft()
                ready.append((*_decode(res.get()), k))

        try:
            for base, buf, a, b in spans:
                kind = kind or _sniff_kind(buf[a:min(b, a + 65536)])
                if not job:
                    job_base = base
                job.append(buf[a:b] if a or b != len(buf) else buf)
                job_size += b - a
                if job_size >= block_bytes:
                    submit()
                while ready:
                    yield ready.popleft()
            submit()
        except DumpError as e:
            submit()
            err = e
        while pending:
            res, k = pending.popleft()
            ready.append((*_decode(res.get()), k))
        while ready:
            yield ready.popleft()
        if err is not None:
            raise err


def _drive_shared(spans: Iterator[tuple[int, Any, int, int]], workers: int, spec: DumpSpec, kind: str | None,
                  block_bytes: int) -> Iterator[Batch]:
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
    ready: deque = deque()
    try:
        with _mp_context().Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:

            def take_one() -> None:
                slot, res, k = pending.popleft()
                payload, counts, first_bad = res.get()
                recs = _unpack(_SLOTS[slot].buf[:payload] if isinstance(payload, int) else payload)
                free.append(slot)
                ready.append((recs, counts, first_bad, k))

            def submit(parts: list[tuple[Any, int, int]], base: int) -> None:
                if not free:
                    take_one()
                slot = free.popleft()
                view, pos = _SLOTS[slot].buf, 0
                for buf, a, b in parts:
                    view[pos:pos + b - a] = memoryview(buf)[a:b]
                    pos += b - a
                pending.append((slot, pool.apply_async(_work_slot, (slot, pos, base, kind)), kind))

            job: list[tuple[Any, int, int]] = []
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
                    while ready:
                        yield ready.popleft()
            except DumpError as e:
                err = e
            if job:
                submit(job, job_base)
            while pending:
                take_one()
            while ready:
                yield ready.popleft()
            if err is not None:
                raise err
    finally:
        for shm in _SLOTS:
            shm.close()
            shm.unlink()
        _SLOTS = []


def _decode(res: tuple[bytes, Counter, int]) -> tuple[list[dict[str, Any]], Counter, int]:
    blob, counts, first_bad = res
    return _unpack(blob), counts, first_bad


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
            out = pool.map(_read_one, [(str(p), spec, block_bytes) for p in paths], chunksize=1)
            # close + join lets every worker take its stop sentinel and exit; leaving the block straight away calls
            # terminate(), which can leave a worker blocked on the task queue's lock and the join waiting forever
            pool.close()
            pool.join()
        return out
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
    """A DumpResult as a `tasks.crawl.crawl.finish` input: ("dump", records, stats counters)."""
    what = "submissions" if res.kind == "s" else "comments"
    c: Counter = Counter()
    c[f"{what}_read"] = res.counts["lines"]
    c[f"{what}_matched"] = res.counts["matched"]
    c["malformed_lines"] = res.counts["malformed_lines"]
    c["date_filtered"] = res.counts["date_filtered"]
    c["dump_files"] = 1
    return "dump", res.records, c
