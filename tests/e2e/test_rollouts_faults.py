"""Fault tolerance of the rollouts: 20 % injected faults lose and duplicate nothing; kill -9 mid-rollouts, resume,
and the mined pairs are identical to an uninterrupted run's, with no finished state requested again.

Real components: the rollouts stage (Prefect flow, cached shard tasks, the openai client), a loopback FastAPI
server injecting the faults, untrained annotators in the real folder format for the scoring."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.common import paths
from tasks.common.config import load_params
from tasks.common.io import read_jsonl
from tasks.llm.client import LLM, Role
from tasks.simulate import Progress
from tasks.supporter import mine_pairs
from tasks.supporter import rollouts as R
from tests.fakes.mock_llm import MockServer
from tests.supporter_data import (
    build_annotators,
    dialogue,
    micro_params,
    persona,
    rollout_params_file,
    write_simulated,
)


def test_twenty_percent_faults_lose_and_duplicate_nothing(tmp_path):
    cfg = micro_params().supporter.rollouts.model_copy(update={"max_states": 0, "candidates": 3, "continuations": 2,
                                                               "horizon": 2, "constrain_format": False})
    states = R.sample_states([dialogue(i) for i in range(6)], cfg, 1)
    personas = {persona(i)["id"]: persona(i) for i in range(6)}
    with MockServer(fault_rate=0.2, timeout_sleep_s=2.0, seed=7, seeded=True) as m:
        llm = LLM({r: Role(r, m.url, "mock", 0.7, 100) for r in R.ROLES}, tmp_path / "cache.sqlite",
                  max_concurrency=8, timeout_s=1.0, max_retries=6, max_reasks=3)
        prog = Progress(tmp_path / "progress.jsonl")
        counters = asyncio.run(R.rollout_states(llm, states, personas, cfg, prog, 8))
        prog.close()
        faults, hits = dict(m.state.faults), m.state.hits
    rows = R.candidate_rows(states, prog.done)
    assert counters["failed"] == 0 and len(prog.done) == len(states) == 6
    assert sorted({r["state_id"] for r in rows}) == sorted(s["state_id"] for s in states)  # none lost
    assert len(rows) == 6 * 3 and len({r["candidate_id"] for r in rows}) == 18  # none twice
    for r in rows:
        assert len(r["continuations"]) == 2 and all(len(c) == 2 for c in r["continuations"])  # the mock never ends
    # the progress file holds each state once, even though its writes raced with 20 % faults
    lines = [json.loads(x) for x in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(s["state_id"] for s in states)
    tot = llm.ledger.totals()
    assert sum(faults.values()) >= 0.1 * hits and tot["http_attempts"] == hits
    assert tot["retries"] == faults.get("429", 0) + faults.get("500", 0) + faults.get("timeout", 0) > 0
    assert tot["reasks"] <= faults.get("invalid_json", 0)


def test_common_random_numbers_share_seeds_across_candidates(tmp_path):
    """Continuation c of every candidate asks the seeker with the same seed; different c, different seeds."""
    cfg = micro_params().supporter.rollouts.model_copy(update={"candidates": 3, "continuations": 2, "horizon": 2})
    state = R.sample_states([dialogue(0)], cfg, 1)[0]
    seen: list[tuple[str, int | None]] = []

    class Spy(LLM):
        async def ask(self, role_name, messages, **kw):  # noqa: ANN001, ANN003
            if role_name == "seeker":
                seen.append((messages[-1]["content"], kw.get("seed")))
            return await super().ask(role_name, messages, **kw)

    with MockServer(seeded=True) as m:
        llm = Spy({r: Role(r, m.url, "mock", 0.7, 100) for r in R.ROLES}, tmp_path / "c.sqlite", max_concurrency=4)
        async def once() -> dict:
            try:
                return await R.rollout_state(llm, state, persona(0), cfg)
            finally:
                await llm.aclose()

        rec = asyncio.run(once())
    first_turn = {}  # candidate response -> seeds of its continuations' first seeker turn
    for text, seed in seen:
        first_turn.setdefault(text, set()).add(seed)
    responses = [c["response"] for c in rec["candidates"]]
    assert len(set(responses)) == 3  # the seeded mock gives 3 different candidates
    seeds = [first_turn[r] for r in responses]
    assert seeds[0] == seeds[1] == seeds[2] and len(seeds[0]) == 2  # same 2 seeds for every candidate


def _progress_states(progress_dir: Path) -> set[str]:
    out: set[str] = set()
    for f in progress_dir.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            try:
                out.add(json.loads(line)["id"])
            except json.JSONDecodeError:
                pass
    return out


def _pairs(params: Path, out: Path, work: Path) -> dict[str, list[dict]]:
    cfg = load_params(params)
    s = cfg.supporter
    mine_pairs.run(out, work, s.reward, s.pairs, s.rollouts.horizon, Path(cfg.annotate.value_model), cfg.seed)
    return {k: sorted(list(read_jsonl(work / k / "train.jsonl")) + list(read_jsonl(work / k / "validation.jsonl")),
                      key=lambda r: r["id"]) for k in mine_pairs.KINDS}


@pytest.mark.slow
def test_kill9_mid_rollouts_then_resume_gives_identical_pairs(tmp_path, mirror):
    values, emotion = build_annotators(tmp_path / "models", mirror)
    sim, personas = write_simulated(tmp_path / "data", n_train=6, n_val=1)
    with MockServer(latency_s=0.15, seeded=True) as m:
        def cmd(p: Path, out: Path) -> list[str]:
            return [sys.executable, "-m", "tasks.cli.main", "supporter", "rollouts", "--out", str(out), "--sim-dir",
                    str(sim), "--persona-file", str(personas), "--params", str(p)]

        def env(tag: str) -> dict[str, str]:
            return {**os.environ, "ESVR_MLRUNS": str(tmp_path / f"mlruns-{tag}"), "PYTHONPATH": str(paths.ROOT),
                    "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / f"results-{tag}")}

        # the reference: an uninterrupted run with its own caches
        ref_dir = tmp_path / "ref"
        ref_dir.mkdir()
        ref_params = rollout_params_file(ref_dir, m.url, values, emotion)
        r = subprocess.run(cmd(ref_params, ref_dir / "out"), cwd=paths.ROOT, env=env("ref"), capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        params = rollout_params_file(tmp_path, m.url, values, emotion)
        proc = subprocess.Popen(cmd(params, tmp_path / "out"), cwd=paths.ROOT, env=env("run"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        progress = tmp_path / "llm-cache" / "rollouts" / "progress"
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None and len(_progress_states(progress)) < 2:
            time.sleep(0.05)
        assert proc.poll() is None, f"rollouts ended before the kill: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # requests in flight at the kill reach the server
        done = _progress_states(progress)
        hits_before, total_before = dict(m.state.hits_by_tag), m.state.hits
        assert 2 <= len(done) < 6 and not (tmp_path / "out" / "candidates.jsonl").exists()
        r = subprocess.run(cmd(params, tmp_path / "out"), cwd=paths.ROOT, env=env("run"), capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        hits_after, total_after = dict(m.state.hits_by_tag), m.state.hits
    for sid in done:  # finished states: not one request more
        assert hits_after.get(sid, 0) == hits_before.get(sid, 0), sid
    calls_per_state = 3 + 3 * 2 * (2 + 3)  # K proposals + K x 2 continuations x (2 seeker + TVD, RG, supporter)
    assert total_after - total_before <= calls_per_state * (6 - len(done))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["states_done"] == 6 and report["failed"] == 0
    assert (tmp_path / "out" / "candidates.jsonl").read_bytes() == (ref_dir / "out" / "candidates.jsonl").read_bytes()
    got, want = _pairs(params, tmp_path / "out", tmp_path / "pairs"), _pairs(ref_params, ref_dir / "out",
                                                                            ref_dir / "pairs")
    assert got == want and sum(len(v) for v in got.values()) > 0
