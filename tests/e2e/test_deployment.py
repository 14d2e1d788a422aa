"""The scheduled deployment in prefect.yaml registers against a real Prefect API on a process work pool."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tasks.common import paths


def test_prefect_yaml_deploys_a_scheduled_pipeline(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    env = {**os.environ, "PREFECT_API_URL": api, "ESVR_ROOT": str(paths.ROOT)}
    prefect = str(Path(sys.executable).with_name("prefect"))
    subprocess.run([prefect, "work-pool", "create", "esvr-gpu", "--type", "process"], env=env, check=True,
                   capture_output=True, cwd=paths.ROOT, timeout=120)
    res = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], env=env, capture_output=True, text=True,
                         cwd=paths.ROOT, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    async def _read():
        async with get_client() as client:
            dep = await client.read_deployment_by_name("pipeline/nightly")
            return dep

    dep = asyncio.run(_read())
    assert dep.work_pool_name == "esvr-gpu"
    assert dep.entrypoint == "flows/pipeline.py:pipeline_flow"
    assert [s.schedule.cron for s in dep.schedules] == ["0 3 * * *"]
    assert dep.parameters == {"profile": "paper", "targets": None, "force": False, "push": True,
                              "refresh": ["crawl_live"]}
    assert dep.global_concurrency_limit.limit == 1
    assert str(getattr(dep.concurrency_options.collision_strategy, "value", dep.concurrency_options.collision_strategy)) \
        == "CANCEL_NEW"
