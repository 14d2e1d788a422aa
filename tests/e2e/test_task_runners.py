"""The annotate stage's shard tasks on a real local Dask cluster (2 worker processes, prefect-dask) give the same
bytes as on the thread runner: the runner decides where work runs, never what it produces."""

from __future__ import annotations

import pytest

from tasks import annotate
from tasks.common.config import OrchestrationParams
from tasks.common.hashing import sha256_tree
from tasks.common.io import write_jsonl
from tasks.common.orchestration import make_task_runner
from tests.e2e.test_annotate_flow import _cfg, _thread, model_folders  # noqa: F401 - the fixture is reused


@pytest.mark.slow
def test_annotate_on_a_local_dask_cluster_matches_the_thread_runner(prefect_api, model_folders, tmp_path):  # noqa: F811
    prefect_dask = pytest.importorskip("prefect_dask")
    values, emotion = model_folders
    src = tmp_path / "threads"
    for i, texts in enumerate([["I want to be free to choose my own path.", "me too"],
                               ["We must protect the forests and rivers.", "agreed"],
                               ["My family means everything to me.", "same here", "ok"],
                               ["I worked hard and finally got the job.", "congrats"]]):
        write_jsonl(src / f"s{i}.jsonl", [_thread(f"t{i}", texts)])
    # a fresh cache per run (cache_version), so both runners really compute every shard
    cfg = _cfg(values, emotion)
    thread = OrchestrationParams(task_runner="thread", address=None, workers=1)
    dask = OrchestrationParams(task_runner="dask", address=None, workers=2)
    assert isinstance(make_task_runner(dask), prefect_dask.DaskTaskRunner)
    s_thread = annotate.annotate_all(cfg, src, tmp_path / "out_thread", runner=thread,
                                     cache_version=f"{annotate.CACHE_VERSION}/thread/{tmp_path.name}")
    s_dask = annotate.annotate_all(cfg, src, tmp_path / "out_dask", runner=dask,
                                   cache_version=f"{annotate.CACHE_VERSION}/dask/{tmp_path.name}")
    assert (s_thread["annotated"], s_dask["annotated"]) == (4, 4)
    assert s_dask["cached"] == 0 and s_dask["utterances"] == s_thread["utterances"] == 9
    assert sha256_tree(tmp_path / "out_dask") == sha256_tree(tmp_path / "out_thread")
