"""Prefect flows: one per DVC stage (what `esvr stage NAME` runs) and the pipeline flow that follows dvc.yaml.

Convention, declared once: stage `X` of dvc.yaml runs `flows/X.py:X_flow` (imported lazily so `esvr --help` stays
fast); a test holds every dvc.yaml stage against it.
"""


def flow_ref(stage: str) -> tuple[str, str]:
    """(module, function) of the flow that runs `stage`."""
    return f"flows.{stage}", f"{stage}_flow"
