"""Prefect flows: one per DVC stage (what `esvr stage NAME` runs) and the pipeline flow that follows dvc.yaml.

STAGE_FLOWS maps each dvc.yaml stage name to "module:function" (imported lazily so `esvr --help` stays fast).
"""

STAGE_FLOWS: dict[str, str] = {
    "sources": "flows.sources:sources_flow",
    "personas": "flows.personas:personas_flow",
    "simulate": "flows.simulate:simulate_flow",
}
