"""Stage crawl through its real Prefect flow (test API) and MLflow store: per-file tasks are cached across runs,
the store and metrics are written, and the MLflow run holds no raw username."""

from __future__ import annotations

import csv

import pytest
import yaml

from tasks import sources
from tasks.common import config, paths
from tasks.crawl import crawl, records


@pytest.fixture
def staged(tmp_path, mirror, monkeypatch):
    ext = tmp_path / "data" / "external"
    sources.run(["offmychest_threads", "pushshift_samples"], dest_root=ext, mirror=mirror)
    monkeypatch.setattr(paths, "EXTERNAL", ext)
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(paths, "THREADS", tmp_path / "data" / "threads")
    monkeypatch.setattr(paths, "LIVE", tmp_path / "data" / "live")
    monkeypatch.setattr(paths, "METRICS", tmp_path / "metrics")
    data, files = config.resolve_profile("tiny")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    monkeypatch.delenv(records.KEY_ENV, raising=False)
    return tmp_path, params


def test_flow_writes_store_and_caches_per_file(staged, prefect_api, mlflow_store, monkeypatch):
    import mlflow

    from flows.crawl import crawl_flow

    root, params = staged
    calls: list[str] = []
    real_table, real_dump = crawl.table_part, crawl.dump_part
    monkeypatch.setattr(crawl, "table_part", lambda *a, **k: calls.append("table") or real_table(*a, **k))
    monkeypatch.setattr(crawl, "dump_part", lambda *a, **k: calls.append("dump") or real_dump(*a, **k))

    first = crawl_flow(params_file=str(params))
    assert first["threads"] == 30 and first["submissions_read"] == 30 + 13050 and first["comments_read"] == 2371 + 1075
    assert sorted(calls) == ["dump", "dump", "table"]
    shards = {p.name: p.read_bytes() for p in (root / "data/threads/shards").iterdir()}
    assert shards and (root / "metrics/crawl.json").is_file() and (root / "data/threads/stats.json").is_file()

    calls.clear()
    second = crawl_flow(params_file=str(params))
    assert second == first and calls == [], "unchanged files must come from the Prefect cache"
    assert {p.name: p.read_bytes() for p in (root / "data/threads/shards").iterdir()} == shards

    # A different key is a different cache entry (pseudonyms change), never a stale hit.
    monkeypatch.setenv(records.KEY_ENV, "another-secret")
    crawl_flow(params_file=str(params))
    assert sorted(calls) == ["dump", "dump", "table"]

    runs = mlflow.search_runs(experiment_names=["esvr-test", "esvr"], output_format="list")
    run = next(r for r in runs if r.data.tags.get("esvr.stage") == "crawl")
    assert run.data.metrics["crawl.threads"] == 30
    with open(paths.EXTERNAL / "offmychest_threads/offmychest.csv", encoding="utf-8", newline="") as f:
        names = {row[0] for row in list(csv.reader(f))[1:] if len(row[0]) >= 6}
    logged = " ".join(f"{k}={v}" for r in runs for k, v in {**r.data.params, **r.data.tags}.items())
    assert not {n for n in names if n in logged}


@pytest.mark.slow
def test_flow_live_task_is_retried_and_resumes(staged, prefect_api, mlflow_store, monkeypatch, mirror):
    """prawcore gives up after 3 answers 503; the Prefect task retry of stage crawl_live resumes the crawl from
    data/live/ (its DVC out); stage crawl then builds threads from it; a second crawl_live run with nothing new
    leaves data/live/ byte-identical (so DVC skips crawl)."""
    from flows import crawl_live as crawl_live_flow_module
    from flows.crawl import crawl_flow
    from tasks.common.hashing import sha256_tree
    from tests.fakes.reddit_fake import FakeReddit, build_site, env_for

    root, params = staged
    data = yaml.safe_load(params.read_text())
    data["crawl"]["dumps"] = []
    data["crawl"]["live"].update(enabled=True, subreddit="AskMen", retries=2, retry_delay_s=0.0, timeout_s=10.0)
    params.write_text(yaml.safe_dump(data))
    live = root / "data" / "live"
    with FakeReddit(build_site(mirror, n_submissions=4), fail_first=3) as fake:
        for k, v in env_for(fake).items():
            monkeypatch.setenv(k, v)
        first = crawl_live_flow_module.crawl_live_flow(params_file=str(params))
        assert sum(p.startswith("/api/v1/access_token") for _, _, p in fake.log) >= 2  # a second task attempt
        assert first["submissions"] == 4 and first["run.submissions"] == 4
        before = sha256_tree(live)
        again = crawl_live_flow_module.crawl_live_flow(params_file=str(params))
        assert again["submissions"] == 4 and "run.submissions" not in again  # nothing newer than the watermark
        assert sha256_tree(live) == before
    out = crawl_flow(params_file=str(params))
    assert out["threads"] == 30 + 3 and out["submissions_read"] == 30 + 4
    assert len(list((live / "raw").glob("*.jsonl"))) == 4
