"""Resumability: `esvr crawl live` killed with SIGKILL mid-crawl, then run again, gives a thread store identical
to an uninterrupted run's (no duplicates, nothing lost). Real praw against the loopback Reddit server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, run_cli
from tests.fakes.reddit_fake import FakeReddit, build_site, env_for


def _cmd(state: Path, out: Path) -> list[str]:
    return ["esvr", "crawl", "live", "--subreddit", "AskMen", "--state", str(state), "--out", str(out)]


def _env(fake: FakeReddit) -> dict[str, str]:
    return {**env_for(fake), "ESVR_PSEUDONYM_KEY": "resume-test-key"}


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_kill_9_mid_crawl_then_rerun_is_identical(mirror, tmp_path):
    site = build_site(mirror)
    with FakeReddit(site, delay_s=0.12) as fake:
        full = run_cli(_cmd(tmp_path / "a_state", tmp_path / "a_out"), ROOT, _env(fake), timeout=300)
        assert full.returncode == 0, full.stderr[-2000:]

        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), **_env(fake)}
        proc = subprocess.Popen(_cmd(tmp_path / "b_state", tmp_path / "b_out"), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        raw = tmp_path / "b_state" / "raw"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(raw.glob("*.jsonl")) if raw.is_dir() else []) < 4:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the process group: the CLI and anything it started
        proc.wait()
        done = len(list(raw.glob("*.jsonl")))
        assert 4 <= done < 12, f"kill landed after {done} of 12 submissions"
        assert not (tmp_path / "b_out" / "stats.json").exists()
        (tmp_path / "b_out" / "shards").mkdir(parents=True)
        (tmp_path / "b_out" / "shards" / ".leftover.jsonl.tmp").write_text("half a shard")  # as a kill mid-write

        again = run_cli(_cmd(tmp_path / "b_state", tmp_path / "b_out"), ROOT, _env(fake), timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]

    a, b = _files(tmp_path / "a_out"), _files(tmp_path / "b_out")
    assert a == b and any(k.startswith("shards/") for k in a)
    assert _files(tmp_path / "a_state" / "raw") == _files(tmp_path / "b_state" / "raw")
    import orjson

    stats = orjson.loads(b["stats.json"])
    assert stats["threads"] == 11 and stats["submissions_read"] == 12
    assert stats["comments_read"] == sum(len(v) for v in site["comments"].values())  # nothing lost, nothing twice
