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
}
