"""Flow of stage `crawl_live`: the live Reddit crawl as a retried task into data/live/ (tasks/crawl/crawl_live.py)."""

from __future__ import annotations

import logging

from prefect import flow, task

from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run
from tasks.crawl import crawl_live, records

log = logging.getLogger(__name__)


@flow(name="crawl_live", log_prints=False)
def crawl_live_flow(params_file: str = "params.yaml") -> dict:
    params = stage_params("crawl_live", paths.ROOT / params_file)
    cfg = params.crawl
    lv = cfg.live
    state = crawl_live.live_dir()
    if (paths.DATA.parent / lv.state_dir).resolve() != state.resolve():  # DATA.parent: the project root
        raise records.CrawlError(f"crawl.live.state_dir is {lv.state_dir!r}; the DVC-tracked live input is {state} "
                                 "(dvc.yaml crawl_live outs): set it back")
    state.mkdir(parents=True, exist_ok=True)

    @task(name="crawl-live", retries=lv.retries, retry_delay_seconds=lv.retry_delay_s)
    def live() -> dict:  # each retry resumes from the checkpoint in the state folder
        pseudo = records.pseudonymiser_from_env(cfg.pseudonym_fallback, params.seed) if lv.enabled else None
        return crawl_live.run(cfg, state, pseudo)

    with stage_run("crawl_live", params.profile, params.tracking.experiment, params={"live": lv}):
        import mlflow

        out = live()
        mlflow.log_metrics({f"crawl_live.{k}": float(v) for k, v in out.items() if isinstance(v, int | float)})
        write_json(paths.METRICS / "crawl_live.json", {k: v for k, v in out.items() if not k.startswith("run.")})
    return out
