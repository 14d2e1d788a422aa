"""Benchmark: rolled-out states per minute at concurrency 1 vs 32 against a loopback OpenAI-compatible server with
300 ms injected latency per call (rollouts are I/O-bound on a real API; this measures our overhead and scheduling).

A state costs K proposals + K x continuations x (h seeker turns + (h - 1) x (TVD, RG, supporter)) calls; its
critical path is only 1 + h + 3(h - 1) of them, so a state alone cannot fill 32 slots: the stage runs several
states at once (tasks/supporter/rollouts.states_in_flight). The ideal speed-up of concurrency c over 1 is c; the
target is >= 0.8 x ideal.

    python -m benchmarks.rollouts [--latency 0.3] [--concurrency 32] [--states 96]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.llm.client import LLM, Role, free_port, wait_healthy
from tasks.simulate import Progress
from tasks.supporter import rollouts
from tests.params import group
from tests.supporter_data import dialogue, persona

#: The paper profile's shape (K = 4, 2 continuations) at h = 2, every call to the mock.
CFG = group("supporter.rollouts", states_per_dialogue=1, max_states=0, candidates=4, continuations=2, horizon=2,
            constrain_format=False, shard_size=64, max_failed_fraction=0.0)


def measure(url: str, n_states: int, concurrency: int, work: Path) -> dict[str, Any]:
    """States/min for n_states at `concurrency` (fresh cache: every call goes to the server)."""
    d = Path(tempfile.mkdtemp(dir=work))
    states = rollouts.sample_states([dialogue(1000 * concurrency + i) for i in range(n_states)], CFG, 0)
    people = {s["persona_id"]: persona(int(s["persona_id"].split("-")[1])) for s in states}
    llm = LLM({r: Role(r, url, "mock", 0.7, 100) for r in rollouts.ROLES}, d / "cache.sqlite",
              max_concurrency=concurrency, timeout_s=30, max_retries=2)
    progress = Progress(d / "progress.jsonl")
    t0 = time.perf_counter()
    counters = asyncio.run(rollouts.rollout_states(llm, states, people, CFG, progress, concurrency))
    wall = time.perf_counter() - t0
    progress.close()
    assert counters["failed"] == 0 and len(progress.done) == n_states, counters
    calls = llm.ledger.totals()["requests"]
    return {"concurrency": concurrency, "states": n_states, "calls": int(calls), "wall_s": round(wall, 2),
            "states_per_min": round(60 * n_states / wall, 2)}


def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--states", type=int, default=96, help="states at the high concurrency (3 rounds of 32: a small tail)")
    ap.add_argument("--serial-states", type=int, default=2)
    a, _ = ap.parse_known_args()
    logging.basicConfig(level=logging.WARNING)
    port = free_port()
    # the server in its own process, so its event loop does not share our GIL; seeded: K distinct candidates
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.mock_llm", "--port", str(port), "--latency",
                               str(a.latency), "--seeded"])
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", 60, server)
        url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory() as work:
            measure(url, 2, 8, Path(work))  # warm-up: imports, first connections (not timed)
            base = measure(url, a.serial_states, 1, Path(work))
            par = measure(url, a.states, a.concurrency, Path(work))
    finally:
        server.terminate()
        server.wait(timeout=10)
    speedup = par["states_per_min"] / base["states_per_min"]
    per_state = CFG.candidates + CFG.candidates * CFG.continuations * (CFG.horizon + 3 * (CFG.horizon - 1))
    out = {"latency_s": a.latency, "calls_per_state": per_state, "baseline": base, "concurrent": par,
           "speedup": round(speedup, 2), "ideal_speedup": a.concurrency, "efficiency": round(speedup / a.concurrency, 3),
           "target_efficiency": 0.8, "meets_target": speedup >= 0.8 * a.concurrency}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
