"""Flow of stage `esconv_analysis`: positive values in the last seeker turns, high- vs low-effect ESConv sessions."""

from __future__ import annotations

import logging

from prefect import flow

from tasks import esconv_analysis
from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import stage_run

log = logging.getLogger(__name__)


@flow(name="esconv_analysis", log_prints=False)
def esconv_analysis_flow(params_file: str = "params.yaml") -> dict:
    cfg_all = stage_params("esconv_analysis", paths.ROOT / params_file)
    cfg = cfg_all.esconv_analysis
    with stage_run("esconv_analysis", cfg_all.profile, cfg_all.tracking.experiment,
                   params={"esconv_analysis": cfg.model_dump()}):
        import mlflow

        res = esconv_analysis.run(paths.EXTERNAL / "esconv", cfg.model, cfg, cfg_all.seed)
        flat = {f"{g}.{k}": v for g in ("high_effect", "low_effect") for k, v in res[g].items()
                if isinstance(v, (int, float))}
        flat.update({f"{g}.ci95_{b}": res[g]["ci95"][i] for g in ("high_effect", "low_effect", "difference")
                     for i, b in enumerate(("low", "high"))})
        flat.update({k: res[k] for k in ("p_value", "values_per_turn", "positive_values_per_turn",
                                         "share_turns_without_value")})
        flat["difference.mean"] = res["difference"]["mean"]
        mlflow.log_metrics({k: float(v) for k, v in flat.items() if v == v})  # nan (an empty group) is not logged
        write_json(paths.METRICS / "esconv_analysis.json", res)
    log.info("esconv_analysis: %s", res)
    return res
