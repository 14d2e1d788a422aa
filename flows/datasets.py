"""Flow of stage `datasets`: TVD, RG SFT and RG preference pairs from annotated threads (DVC tracks data/datasets)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from prefect import flow

from tasks import datasets
from tasks.common import paths
from tasks.common.io import write_json
from tasks.common.orchestration import stage_params
from tasks.common.tracking import numeric_leaves, stage_run

log = logging.getLogger(__name__)


def log_mlflow_inputs(out_dir: Path) -> int:
    """Log every dataset split as an MLflow dataset input (digest + schema + source path), cards as artifacts."""
    import mlflow
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    n = 0
    for name in datasets.DATASETS:
        for split_file in sorted((out_dir / name).glob("*.jsonl")):
            rows = []
            for r in datasets.read_jsonl(split_file):
                prompt, answers = datasets.prompt_and_answers(name, r)
                rows.append({"id": r["id"], "thread_id": r["thread_id"], "target_values": "; ".join(r["target_values"]),
                             "prompt": json.dumps(prompt, ensure_ascii=False),
                             "answer": answers[0]["content"],
                             "rejected": answers[1]["content"] if len(answers) > 1 else ""})
            df = pd.DataFrame(rows, columns=["id", "thread_id", "target_values", "prompt", "answer", "rejected"])
            with warnings.catch_warnings():
                # MLflow 3.17 registers the local-file source twice and warns that a path is ambiguous between them.
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                ds = from_pandas(df, source=str(split_file.resolve()), name=f"{name}-{split_file.stem}",
                                             targets="answer")
            mlflow.log_input(ds, context=split_file.stem, tags={"esvr.dataset": name, "rows": str(len(df))})
            n += 1
        card = out_dir / name / "DATA_CARD.md"
        if card.is_file():
            mlflow.log_artifact(str(card), artifact_path=f"datasets/{name}")
    stats = out_dir / "stats.json"
    if stats.is_file():
        mlflow.log_artifact(str(stats), artifact_path="datasets")
    return n


def metrics_of(report: dict[str, Any]) -> dict[str, Any]:
    """What DVC tracks as metrics: numbers only (sizes, drops, label distribution, rates, pairs per post)."""
    return {k: v for k, v in report.items() if k in ("extraction", "positivity", *datasets.DATASETS, "split_threads")}


@flow(name="datasets", log_prints=False)
def datasets_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    cfg = stage_params("datasets", paths.ROOT / params_file)
    log.info("datasets: %s (seed %d)", cfg.datasets.model_dump(), cfg.seed)
    with stage_run("datasets", cfg.profile, cfg.tracking.experiment,
                   params={"datasets": cfg.datasets.model_dump(), "seed": cfg.seed}) as _:
        import mlflow

        report = datasets.build_task()(cfg.datasets, cfg.seed)
        mlflow.log_metrics(numeric_leaves(metrics_of(report), "datasets"))
        mlflow.set_tag("datasets.length_measure", report["length_measure"])
        log_mlflow_inputs(datasets.OUT_DIR)
        write_json(paths.METRICS / "datasets.json", metrics_of(report))
    summary = {name: report[name]["size"] for name in datasets.DATASETS}
    return {"sizes": summary, "positive_rate_on_path": report["extraction"]["positive_rate_on_path"]}
