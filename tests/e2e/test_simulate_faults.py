"""Fault tolerance of the simulation: 20 % injected faults lose nothing; kill -9 + resume re-requests nothing finished.

Real components: the simulate stage code, the openai client, a loopback FastAPI server (faults injected there).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks import simulate
from tasks.common import paths
from tasks.common.config import resolve_profile
from tasks.common.io import read_jsonl, write_jsonl
from tasks.llm.client import LLM, Role
from tests.fakes.mock_llm import MockServer

SIM = {"personas": None, "min_turns": 1, "max_turns": 3, "validation_fraction": 0.25}


def _personas(n: int) -> list[dict]:
    return [{"id": f"persona-{i:02d}", "problem_type": "job crisis", "emotion_type": "anxiety",
             "initial_intensity": 4, "context": f"You are person {i}."} for i in range(n)]


def test_twenty_percent_faults_lose_and_duplicate_nothing(tmp_path):
    write_jsonl(tmp_path / "personas.jsonl", _personas(8))
    with MockServer(fault_rate=0.2, timeout_sleep_s=2.0, seed=7) as m:
        roles = {r: Role(r, m.url, "mock", 0.7, 100) for r in simulate.ROLES}
        llm = LLM(roles, tmp_path / "cache.sqlite", max_concurrency=8, timeout_s=1.0, max_retries=6, max_reasks=3)
        report = simulate.run(llm, tmp_path / "personas.jsonl", tmp_path / "out", SIM, 1, tmp_path / "progress", 8)
        faults = dict(m.state.faults)
        hits = m.state.hits
    out = list(read_jsonl(tmp_path / "out" / "train.jsonl")) + list(read_jsonl(tmp_path / "out" / "validation.jsonl"))
    assert report["failed"] == 0 and report["dialogues"] == 8
    assert sorted(r["persona_id"] for r in out) == [p["id"] for p in _personas(8)]  # none lost, none twice
    assert len({r["id"] for r in out}) == 8
    tot = llm.ledger.totals()
    assert sum(faults.values()) >= 0.1 * hits  # the server really misbehaved
    assert tot["http_attempts"] == hits
    # every 429/500/timeout costs exactly one client retry; invalid JSON to a JSON role costs a re-ask
    assert tot["retries"] == faults.get("429", 0) + faults.get("500", 0) + faults.get("timeout", 0) > 0
    assert tot["reasks"] <= faults.get("invalid_json", 0)
    for r in out:  # every reasoning field survived
        assert r["messages"][0]["role"] == "system" and r["messages"][-1]["role"] == "assistant"
        for t in r["turns"]:
            assert t["adopt_reference"] in ("Yes", "No") and len(t["target_values"]) == 3
            assert t["alt_response_with_reference"] and t["alt_response_without_reference"]


def _params_file(tmp_path: Path, url: str) -> Path:
    data, _ = resolve_profile("tiny")
    data["llm"]["local_models"] = {}
    for role in data["llm"]["roles"].values():
        role.update(base_url=url, model="mock")
    data["llm"].update(cache_dir=str(tmp_path / "llm-cache"), max_concurrency=2, timeout_s=5.0)
    data["simulate"].update(min_turns=1, max_turns=3, validation_fraction=0.25)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def _simulate_cmd(params: Path, personas: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tasks.cli.main", "simulate", "--personas", "6", "--out", str(out),
            "--persona-file", str(personas), "--params", str(params)]


@pytest.mark.slow
def test_kill9_then_resume_rerequests_nothing_finished(tmp_path):
    write_jsonl(tmp_path / "personas.jsonl", _personas(6))
    env = {**os.environ, "ESVR_MLRUNS": str(tmp_path / "mlruns"), "PYTHONPATH": str(paths.ROOT)}
    with MockServer(latency_s=0.15) as m:
        params = _params_file(tmp_path, m.url)
        cmd = _simulate_cmd(params, tmp_path / "personas.jsonl", tmp_path / "out")
        proc = subprocess.Popen(cmd, cwd=paths.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        progress_dir = tmp_path / "llm-cache" / "progress"
        deadline = time.monotonic() + 180
        finished: list[dict] = []
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(progress_dir.glob("*.jsonl"))
            if files:
                finished = [json.loads(x) for x in files[0].read_text().splitlines() if x.strip()]
                if len(finished) >= 2:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, f"simulation ended before it could be killed: {proc.stdout.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # requests still in flight at the kill reach the server
        # what was finished when killed (re-read: more may have finished before the signal landed)
        finished = [json.loads(x) for x in files[0].read_text().splitlines() if x.strip()]
        done_ids = {r["id"] for r in finished}
        hits_before = dict(m.state.hits_by_tag)
        total_before = m.state.hits
        assert 2 <= len(done_ids) < 6
        assert not (tmp_path / "out" / "train.jsonl").exists()  # outputs are written only at the end

        res = subprocess.run(cmd, cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        hits_after = dict(m.state.hits_by_tag)
    for did in done_ids:  # finished dialogues: not one request more
        assert hits_after.get(did, 0) == hits_before.get(did, 0)
    out = list(read_jsonl(tmp_path / "out" / "train.jsonl")) + list(read_jsonl(tmp_path / "out" / "validation.jsonl"))
    assert len(out) == 6 and len({r["id"] for r in out}) == 6 and done_ids <= {r["id"] for r in out}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dialogues"] == 6
    # the resume paid only for unfinished work: 6 dialogues x 13 calls = 78 calls in all, at most once each
    assert m.state.hits - total_before <= 78 - 13 * len(done_ids)


def test_budget_cap_stops_cleanly_and_resumes(tmp_path):
    write_jsonl(tmp_path / "personas.jsonl", _personas(6))
    sim = {**SIM, "validation_fraction": 0.0}
    with MockServer() as m:
        # mock usage is 10 + 5 tokens per call: at $1e4 per 1M tokens a call costs $0.15, a 13-call dialogue ~$2
        def llm(budget: float) -> LLM:
            return LLM({r: Role(r, m.url, "mock", 0.7, 100, price_prompt_per_mtok=1e4,
                                price_completion_per_mtok=1e4) for r in simulate.ROLES},
                       tmp_path / "cache.sqlite", max_concurrency=1, budget_usd=budget)

        first = simulate.run(llm(5.0), tmp_path / "personas.jsonl", tmp_path / "out", sim, 1, tmp_path / "prog", 1)
        hits = m.state.hits
        assert first["stopped_by_budget"] and 1 <= first["dialogues"] < 6
        saved = list(read_jsonl(tmp_path / "out" / "train.jsonl"))
        assert len(saved) == first["dialogues"]  # what finished is written
        second = simulate.run(llm(100.0), tmp_path / "personas.jsonl", tmp_path / "out", sim, 1, tmp_path / "prog", 1)
    assert not second["stopped_by_budget"] and second["dialogues"] == 6
    assert hits < m.state.hits == 6 * 13  # across both runs every call was made exactly once
