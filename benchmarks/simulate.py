"""Benchmark: simulated dialogues per minute at concurrency 1 vs 32 against a loopback OpenAI-compatible server
with 300 ms injected latency per call (the simulation is I/O-bound on a real API; this measures our overhead).

Each dialogue has a fixed length under the mock (the seeker never ends early): 1 + 4 x max_turns calls. The ideal
speed-up of concurrency c over 1 is c (as long as there are >= c dialogues); the target is >= 0.8 x ideal.

    python -m benchmarks.simulate [--latency 0.3] [--concurrency 32] [--turns 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tasks import simulate
from tasks.common.io import write_jsonl
from tasks.llm.client import LLM, Role, free_port, wait_healthy


def measure(url: str, n_dialogues: int, concurrency: int, turns: int, work: Path) -> dict:
    """Dialogues/min for `n_dialogues` at `concurrency` (fresh cache: every call goes to the server)."""
    d = Path(tempfile.mkdtemp(dir=work))
    write_jsonl(d / "p.jsonl", [{"id": f"bench-{concurrency}-{i}", "problem_type": "job crisis",
                                 "emotion_type": "anxiety", "initial_intensity": 4, "context": f"You are {i}."}
                                for i in range(n_dialogues)])
    roles = {r: Role(r, url, "mock", 0.7, 100) for r in simulate.ROLES}
    llm = LLM(roles, d / "cache.sqlite", max_concurrency=concurrency, timeout_s=30, max_retries=2)
    sim = {"personas": None, "min_turns": turns, "max_turns": turns, "validation_fraction": 0.0}
    t0 = time.perf_counter()
    report = simulate.run(llm, d / "p.jsonl", d / "out", sim, 0, d / "progress", concurrency)
    wall = time.perf_counter() - t0
    assert report["dialogues"] == n_dialogues and report["failed"] == 0, report
    calls = llm.ledger.totals()["requests"]
    return {"concurrency": concurrency, "dialogues": n_dialogues, "calls": int(calls), "wall_s": round(wall, 2),
            "dialogues_per_min": round(60 * n_dialogues / wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--also", type=int, nargs="*", default=[8, 16], help="Further concurrencies to report.")
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--serial-dialogues", type=int, default=3)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    port = free_port()
    # the server in its own process, so its event loop does not share our GIL
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.mock_llm", "--port", str(port), "--latency",
                               str(a.latency)])
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", 60, server)
        url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory() as work:
            measure(url, 2, 2, 1, Path(work))  # warm-up: imports, first connections (not timed)
            base = measure(url, a.serial_dialogues, 1, a.turns, Path(work))
            par = measure(url, a.concurrency, a.concurrency, a.turns, Path(work))
            others = [measure(url, c, c, a.turns, Path(work)) for c in a.also]
    finally:
        server.terminate()
        server.wait(timeout=10)
    speedup = par["dialogues_per_min"] / base["dialogues_per_min"]
    ideal = a.concurrency
    calls_per_dialogue = 1 + 4 * a.turns
    out = {"latency_s": a.latency, "calls_per_dialogue": calls_per_dialogue,
           "ideal_serial_dialogues_per_min": round(60 / (calls_per_dialogue * a.latency), 2),
           "baseline": base, "concurrent": par, "speedup": round(speedup, 2), "ideal_speedup": ideal,
           "efficiency": round(speedup / ideal, 3), "target_efficiency": 0.8,
           "meets_target": speedup >= 0.8 * ideal,
           "scaling": [{"concurrency": o["concurrency"], "speedup": round(o["dialogues_per_min"] /
                        base["dialogues_per_min"], 2), "efficiency": round(o["dialogues_per_min"] /
                        base["dialogues_per_min"] / o["concurrency"], 3)} for o in others]}
    print(json.dumps(out, indent=2))
    print(f"\n| concurrency | dialogues | wall s | dialogues/min |\n|---|---|---|---|\n"
          f"| 1 | {base['dialogues']} | {base['wall_s']} | {base['dialogues_per_min']} |\n"
          + "".join(f"| {o['concurrency']} | {o['dialogues']} | {o['wall_s']} | {o['dialogues_per_min']} |\n"
                    for o in others)
          + f"| {a.concurrency} | {par['dialogues']} | {par['wall_s']} | {par['dialogues_per_min']} |\n\n"
          f"speed-up {speedup:.2f}x of ideal {ideal}x (efficiency {speedup / ideal:.2f}; target 0.8)")


if __name__ == "__main__":
    main()
