"""Pushshift dump reader: input MB/s and lines/s against (a) a naive single-process reader (one `json.loads` per
line, like the community's filter scripts) and (b) `zstd -dc --long=31 > /dev/null`, the decompression limit.

The dump (default >= 200 MB of ndjson) is generated in a temporary folder by re-encoding the mirror's samples
(RC_2005-12 comments; ids made unique, subreddits re-assigned) and compressed like the monthly dumps (zstd
--long=31, streamed, so the frame declares a 2 GiB window). Two workloads:
  all    every line is in the wanted subreddit (target: >= 2x the naive reader),
  month  a realistic monthly dump where the wanted subreddit is ~0.8 % of lines (target: >= 50 % of zstd -dc).

esvr is timed through `iter_dump`, each block's records consumed as they come (like the naive reader, which keeps
nothing), with 1 and `--workers` processes; `*_collect` is `read_dump`, which also keeps every record in one list
(the extra cost is building ~1 KB of Python objects per kept line, not reading). Each figure is the best of
`--repeat` runs in this one process; the CPU seconds (this process + its children) are reported beside it.

    python -m benchmarks.crawl_reader [--mb 200] [--workers 2] [--repeat 3]

Needs Debian's `zstd` CLI for the limit and for compression (`apt-get install zstd`); without it the limit is
skipped and the python binding compresses.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import zstandard

from tasks.common import paths
from tasks.crawl.pushshift import DumpSpec, iter_dump, read_dump

WANTED = "offmychest"
SAMPLE = "pushshift-samples/RC_2005-12.zst"


def sample_lines() -> list[dict]:
    src = paths.mirror_dir() / SAMPLE
    if not src.is_file():
        src = paths.EXTERNAL / "pushshift_samples" / "RC_2005-12.zst"
    with open(src, "rb") as fh:
        data = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(fh).read()
    return [orjson.loads(x) for x in data.splitlines() if x.strip()]


def generate(path: Path, target_bytes: int, wanted_share: float, seed: int = 7) -> tuple[int, int, int]:
    """Write a zstd --long=31 ndjson dump of >= target_bytes; returns (lines, decompressed bytes, wanted lines)."""
    base = sample_lines()
    rng = random.Random(seed)
    others = [f"sub{i:03d}" for i in range(300)]
    zstd = shutil.which("zstd")
    if zstd:
        proc = subprocess.Popen([zstd, "-q", "-3", "--long=31", "-T2", "-f", "-o", str(path)], stdin=subprocess.PIPE)
        sink = proc.stdin
    else:  # streamed through the binding: no content size, so the frame keeps the 2 GiB window
        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31, enable_ldm=True)
        fh = open(path, "wb")  # noqa: SIM115
        sink = zstandard.ZstdCompressor(compression_params=params).stream_writer(fh)
    n = size = wanted = 0
    copy = 0
    while size < target_bytes:
        buf = io.BytesIO()
        for d in base:
            r = dict(d)
            r["id"] = f"{d['id']}x{copy}"
            r["link_id"] = f"{d['link_id']}x{copy}"
            if r["parent_id"].startswith("t1_"):
                r["parent_id"] = f"{d['parent_id']}x{copy}"
            else:
                r["parent_id"] = r["link_id"]
            hit = wanted_share >= 1 or rng.random() < wanted_share
            r["subreddit"] = WANTED if hit else rng.choice(others)
            wanted += hit
            buf.write(orjson.dumps(r) + b"\n")
            n += 1
        chunk = buf.getvalue()
        sink.write(chunk)
        size += len(chunk)
        copy += 1
    sink.close()
    if zstd:
        proc.wait()
    else:
        fh.close()
    return n, size, wanted


def naive_reader(path: Path, subreddit: str) -> tuple[int, int]:
    """The community pattern: 128 MiB chunks decoded to str, split on newlines, one json.loads per line."""
    lines = kept = 0
    with open(path, "rb") as fh:
        reader = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(fh)
        buffer = ""
        while True:
            chunk = reader.read(2**27)
            if not chunk:
                break
            text = _decode(buffer, chunk, reader)
            parts = text.split("\n")
            buffer = parts[-1]
            for line in parts[:-1]:
                obj = json.loads(line)
                lines += 1
                if obj["subreddit"].lower() == subreddit:
                    kept += 1
    return lines, kept


def _decode(buffer: str, chunk: bytes, reader) -> str:
    # Watchful1's read_and_decode: read more when a multi-byte character was split.
    while True:
        try:
            return buffer + chunk.decode()
        except UnicodeDecodeError:
            chunk += reader.read(2**27)


def stream(path: Path, spec: DumpSpec, workers: int) -> tuple[int, int, int]:
    """iter_dump consumed batch by batch: (lines, kept records, malformed lines)."""
    lines = kept = bad = 0
    for recs, counts, _, _ in iter_dump(path, spec, workers=workers):
        lines += counts["lines"]
        kept += len(recs)
        bad += counts["malformed_lines"]
    return lines, kept, bad


def zstd_limit(path: Path) -> float | None:
    zstd = shutil.which("zstd")
    if not zstd:
        return None
    t0 = time.perf_counter()
    subprocess.run(f"{zstd} -dc --long=31 {path} > /dev/null", shell=True, check=True)  # noqa: S602
    return time.perf_counter() - t0


def _cpu() -> float:
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def timed(fn, repeat: int):
    """Best wall time and the CPU seconds (this process + its children) of that run: on a shared machine the CPU
    time is the steadier measure of work; the wall time is what a user waits."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        out = fn()
        t, c = time.perf_counter() - t0, _cpu() - c0
        if t < best:
            best, cpu = t, c
    return best, cpu, out


def bench_workload(name: str, share: float, mb: int, workers: int, repeat: int, tmp: Path) -> dict:
    path = tmp / f"RC_bench_{name}.zst"
    n, size, wanted = generate(path, mb << 20, share)
    comp = path.stat().st_size
    spec = DumpSpec(subreddit=WANTED, key=b"benchmark-key")
    res: dict = {"lines": n, "decompressed_mb": round(size / 2**20, 1), "compressed_mb": round(comp / 2**20, 1),
                 "wanted_lines": wanted}
    t_lim = c_lim = None
    if shutil.which("zstd"):
        t_lim, c_lim, _ = timed(lambda: zstd_limit(path), repeat)
    t_naive, c_naive, (ln, kept_naive) = timed(lambda: naive_reader(path, WANTED), repeat)
    assert ln == n and kept_naive == wanted, (ln, n, kept_naive, wanted)
    runs = {"naive": (t_naive, c_naive)}
    for w in sorted({1, workers}):
        # Streamed like the naive reader (each block's records are consumed, not kept): the reader's own cost.
        t, c, (lines, kept, bad) = timed(lambda w=w: stream(path, spec, w), repeat)
        assert lines == n and kept == wanted and bad == 0, (lines, n, kept, wanted, bad)
        runs[f"esvr_w{w}"] = (t, c)
    # Collected: every record kept in one list (read_dump), as the crawl stage does with a subreddit's share.
    t, c, r = timed(lambda: read_dump(path, spec, workers=workers), repeat)
    assert r.counts["lines"] == n and len(r.records) == wanted and r.counts["malformed_lines"] == 0
    runs[f"esvr_w{workers}_collect"] = (t, c)
    if t_lim is not None:
        runs["zstd_dc"] = (t_lim, c_lim)
    for k, (t, c) in runs.items():
        res[k] = {"wall_s": round(t, 2), "cpu_s": round(c, 2), "MB_per_s": round(size / 2**20 / t, 1),
                  "lines_per_s": int(n / t), "MB_per_cpu_s": round(size / 2**20 / max(c, 1e-9), 1)}
    best = min((k for k in runs if k.startswith("esvr") and not k.endswith("collect")), key=lambda k: runs[k][0])
    res["best_esvr"] = best
    res["wall_speedup_vs_naive"] = round(t_naive / runs[best][0], 2)
    res["cpu_ratio_naive_over_esvr_w1"] = round(c_naive / runs["esvr_w1"][1], 2)
    if t_lim is not None:
        res["wall_share_of_zstd_limit"] = round(t_lim / runs[best][0], 2)
        res["cpu_share_of_zstd_limit_w1"] = round(c_lim / runs["esvr_w1"][1], 2)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=int(os.environ.get("ESVR_BENCH_MB", 200)), help="decompressed MiB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs of each reader")
    args = ap.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory(prefix="esvr-bench-") as d:
        out = {
            "zstd_cli": shutil.which("zstd") or "missing (apt-get install zstd)",
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),  # the figures mean little when this exceeds the cores
            "all": bench_workload("all", 1.0, args.mb, args.workers, args.repeat, Path(d)),
            "month": bench_workload("month", 0.008, args.mb, args.workers, args.repeat, Path(d)),
        }
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
