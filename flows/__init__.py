"""Prefect flows: one per DVC stage (what `esvr stage NAME` runs) and the pipeline flow that follows dvc.yaml.

STAGE_FLOWS maps each dvc.yaml stage name to "module:function" (imported lazily so `esvr --help` stays fast).
"""

STAGE_FLOWS: dict[str, str] = {
    "sources": "flows.sources:sources_flow",
    "datasets": "flows.datasets:datasets_flow",
    "crawl": "flows.crawl:crawl_flow",
    "train_value_detector": "flows.annotators:train_value_detector_flow",
    "train_emotion": "flows.annotators:train_emotion_flow",
    "annotate": "flows.annotate:annotate_flow",
    "esconv_analysis": "flows.esconv:esconv_analysis_flow",
    "base_model": "flows.base_model:base_model_flow",
    "train_tvd": "flows.train:train_tvd_flow",
    "train_rg_sft": "flows.train:train_rg_sft_flow",
    "train_rg_dpo": "flows.train:train_rg_dpo_flow",
    "personas": "flows.personas:personas_flow",
    "simulate": "flows.simulate:simulate_flow",
}
