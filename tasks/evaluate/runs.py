"""The MLflow side of the evaluation, declared once: what a variant run of experiment `esvr-eval` holds (written by
the `evaluate` stage) and how the report reads a batch of them back.

One run per variant (and one for the human ESConv row), all tagged with the batch (the id of the stage's own run in
experiment `esvr`), the variant, its flags, the paper row it is compared with, and the stage's dvc.lock hash.
Metrics: the contract's `suggestion`, `experience`, `information`, `overall`, `intensity`, `seeker_value`,
`supporter_value` (means over dialogues), each with `.ci_low`/`.ci_high`/`.n` and, against the baseline,
`.diff`/`.diff_ci_low`/`.diff_ci_high`/`.diff_n`; adoption, strategy shares, pairwise rates, judge agreement.
Artifacts: `summary.json` (everything the report needs), `per_dialogue.json` (MLflow table), `dialogues.jsonl`
and `transcripts.md` (with the supporter's reasoning and adoption).
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.common import tracking
from tasks.common.io import write_jsonl

log = logging.getLogger(__name__)

BATCH_TAG = "esvr.eval_batch"
VARIANT_TAG = "esvr.variant"
ORDER_TAG = "esvr.variant_order"
LOCK_TAG = "dvc.lock_hash"
SUMMARY = "summary.json"
DIALOGUES = "dialogues.jsonl"
#: Per-dialogue columns of the MLflow table (the nested lists stay in dialogues.jsonl / summary.json).
TABLE_COLUMNS = ("id", "persona_id", "seeker_value", "supporter_value", "final_intensity", "initial_intensity",
                 "intensity_drop", "adoption_rate", "n_turns", "n_seeker_turns_scored", "n_supporter_turns",
                 "suggestion", "experience", "information", "overall")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def variant_metrics(name: str, report: dict[str, Any]) -> dict[str, float]:
    """The flat metrics of one variant's run (non-finite values are left out: MLflow shows them as missing)."""
    m: dict[str, float] = {}
    for metric, est in report["estimates"][name].items():
        if metric.endswith(".diff"):
            base = metric.removesuffix(".diff")
            m.update({f"{base}.diff": est["mean"], f"{base}.diff_ci_low": est["low"],
                      f"{base}.diff_ci_high": est["high"], f"{base}.diff_n": est["n"]})
        else:
            m.update({metric: est["mean"], f"{metric}.ci_low": est["low"], f"{metric}.ci_high": est["high"],
                      f"{metric}.n": est["n"]})
    means = report["means"][name]
    for k in ("adoption_rate", "malformed_share", "intensity_drop", "initial_intensity"):
        if means.get(k) is not None:
            m[k] = means[k]
    for s, share in means.get("strategy_shares", {}).items():
        m[f"strategy.{slug(s)}"] = share
    for k, v in report["pairwise"].get(name, {}).get("rates", {}).items():
        m[f"pairwise.{k}"] = v
    for dim, kv in report["kappa_by_variant"].get(name, {}).items():
        m[f"kappa.{dim}"] = kv["kappa"]
    c = report["counters"].get(name, {})
    m.update(dialogues=c.get("dialogues", 0), failed=c.get("failed", 0))
    return {k: float(v) for k, v in m.items() if _finite(v)}


def transcript_markdown(d: dict[str, Any], row: dict[str, Any] | None = None) -> str:
    """A readable transcript: seeker turns with intensity; supporter turns with target values, reference, reasoning,
    adoption and strategy (what the policy thought; the seeker saw only the reply)."""
    lines = [f"### {d['id']} (persona {d.get('persona_id') or d.get('source', '-')})", ""]
    for t in d["turns"]:
        if t["role"] == "seeker":
            inten = f" _(intensity {t['intensity']})_" if t.get("intensity") is not None else ""
            lines.append(f"**Seeker**{inten}: {t['text']}")
        else:
            lines.append(f"**Supporter**: {t['text']}")
            shown = [f"{k.replace('_', ' ')}: {t[k]}" for k in ("target_values", "reference", "issue_and_state",
                                                               "reference_key_content", "adopt_reference",
                                                               "adopt_reason", "strategy", "planned_strategy")
                     if t.get(k) not in (None, "", [])]
            if t.get("target_values") is not None and not t.get("target_values_shown", True):
                shown = [s + " (not shown to the policy)" if s.startswith("target values") else s for s in shown]
            if t.get("malformed"):
                shown.append("malformed answer (not in the supporter format); shown to the seeker as written")
            lines += [f"> {s}" for s in shown]
        lines.append("")
    if row is not None:
        lines.append(f"Seeker-Value {row['seeker_value']:.2f}, Supporter-Value {row['supporter_value']:.2f}, "
                     f"final intensity {row['final_intensity']}")
        judge = row.get("judge") or {}
        for dim, v in judge.items():
            lines.append(f"- judge {dim}: {v.get('score')} — {v.get('rationale', '')}")
        lines.append("")
    return "\n".join(lines)


def log_variant_runs(report: dict[str, Any], variants: dict[str, dict[str, Any]], experiment: str, batch: str,
                     common: dict[str, Any], tags: dict[str, str]) -> dict[str, str]:
    """One FINISHED run per variant in `experiment`; returns {variant: run id}. `variants` holds each variant's
    params (flags, model, paper row, tables) in report order; `common` the params every run shares."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient()
    exp_id = tracking.ensure_experiment(experiment)
    ids: dict[str, str] = {}
    now = int(time.time() * 1000)
    for order, (name, info) in enumerate(variants.items()):
        if name not in report["scored"]:
            continue
        run = client.create_run(exp_id, run_name=name, tags={
            **tags, BATCH_TAG: batch, VARIANT_TAG: name, ORDER_TAG: str(order),
            "esvr.kind": str(info.get("kind")), "esvr.paper_row": str(info.get("paper_row") or ""),
            "esvr.tables": ",".join(info.get("tables") or [])})
        rid = run.info.run_id
        try:
            params = {**{f"variant.{k}": v for k, v in info.items()}, **common}
            client.log_batch(rid, metrics=[Metric(k, v, now, 0) for k, v in variant_metrics(name, report).items()],
                             params=[Param(k, str(v)[:500]) for k, v in sorted(params.items())])
            rows = report["scored"][name]
            client.log_table(rid, {c: [r.get(c) for r in rows] for c in TABLE_COLUMNS}, "per_dialogue.json")
            summary = {"variant": name, "info": info, "estimates": report["estimates"][name],
                       "means": report["means"][name], "pairwise": report["pairwise"].get(name),
                       "kappa": report["kappa_by_variant"].get(name), "counters": report["counters"].get(name),
                       "per_dialogue": [{c: r.get(c) for c in (*TABLE_COLUMNS, "strategies")} for r in rows]}
            client.log_dict(rid, summary, SUMMARY)
            dialogues = report["dialogues"][name]
            client.log_text(rid, "\n".join(transcript_markdown(d, r) for d, r in zip(dialogues, rows, strict=True)),
                            "transcripts.md")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / DIALOGUES
                write_jsonl(path, [{**d, "scores": r} for d, r in zip(dialogues, rows, strict=True)])
                client.log_artifact(rid, str(path))
            client.set_terminated(rid, "FINISHED")
        except BaseException:
            client.set_terminated(rid, "FAILED")
            raise
        ids[name] = rid
    log.info("evaluate: %d variant runs in experiment %s (batch %s)", len(ids), experiment, batch)
    return ids


def log_stage_summary(report: dict[str, Any], planner: dict[str, float], skipped: dict[str, str],
                      run_ids: dict[str, str]) -> None:
    """Onto the active (stage) run: the judges' agreement over all dialogues, the planner's scores, which variants
    ran (run ids) and which were skipped, and why."""
    import mlflow

    mlflow.log_metrics({f"planner.{k}": float(v) for k, v in planner.items()})
    mlflow.log_metrics({f"kappa.{d}": kv["kappa"] for d, kv in report["kappa"].items() if _finite(kv["kappa"])})
    mlflow.log_metrics({f"kappa.{d}.n": float(kv["n"]) for d, kv in report["kappa"].items()})
    mlflow.log_dict({"skipped": skipped, "run_ids": run_ids}, "variants.json")
    for name, reason in skipped.items():
        mlflow.set_tag(f"evaluate.skipped.{name}", reason[:500])


def tag_runs(run_ids: dict[str, str], key: str, value: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for rid in run_ids.values():
        client.set_tag(rid, key, value)


# ------------------------------------------------------------------------------------------ reading a batch back
@dataclass
class VariantRun:
    name: str
    run_id: str
    status: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    summary: dict[str, Any]
    dialogues: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Batch:
    batch: str
    experiment: str
    runs: list[VariantRun]
    stage_run: dict[str, Any] | None


def _artifact(run_id: str, path: str, dst: Path) -> Path | None:
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))
    except Exception as e:  # noqa: BLE001 - an artifact missing from one run is reported, not fatal
        log.warning("run %s: artifact %s unavailable (%s)", run_id, path, e)
        return None


def load_batch(experiment: str, batch: str | None = None, transcripts: int = 0) -> Batch:
    """The variant runs of one evaluation batch (default: the batch of the most recent finished variant run),
    in the order the stage logged them, with each run's summary and up to `transcripts` dialogues."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        import mlflow

        raise LookupError(f"MLflow experiment {experiment!r} not found at {mlflow.get_tracking_uri()}; "
                          "run the evaluate stage first (`dvc repro evaluate`)")
    if batch is None:
        # other runs share the experiment (the review page's results): only variant runs carry the batch tag
        latest = client.search_runs([exp.experiment_id],
                                    filter_string=f"attributes.status = 'FINISHED' and tags.`{BATCH_TAG}` LIKE '%'",
                                    order_by=["attributes.start_time DESC"], max_results=1)
        if not latest or BATCH_TAG not in latest[0].data.tags:
            raise LookupError(f"experiment {experiment!r} has no finished evaluation runs")
        batch = latest[0].data.tags[BATCH_TAG]
    found = sorted(client.search_runs([exp.experiment_id], filter_string=f"tags.`{BATCH_TAG}` = '{batch}'",
                                      max_results=1000), key=lambda r: int(r.data.tags.get(ORDER_TAG, "0")))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in found:
            rid = r.info.run_id
            p = _artifact(rid, SUMMARY, Path(tmp) / rid)
            summary = json.loads(p.read_text(encoding="utf-8")) if p else {}
            dialogues: list[dict[str, Any]] = []
            if transcripts:
                dp = _artifact(rid, DIALOGUES, Path(tmp) / rid)
                if dp:
                    with open(dp, encoding="utf-8") as f:
                        dialogues = [json.loads(line) for _, line in zip(range(transcripts), f, strict=False)]
            runs.append(VariantRun(r.data.tags[VARIANT_TAG], rid, r.info.status, dict(r.data.metrics),
                                   dict(r.data.params), dict(r.data.tags), summary, dialogues))
    stage = None
    try:
        sr = client.get_run(batch)
        stage = {"run_id": batch, "tags": dict(sr.data.tags), "metrics": dict(sr.data.metrics),
                 "params": dict(sr.data.params)}
    except Exception:  # noqa: BLE001 - a batch logged outside a stage run (tests, `esvr evaluate run`) has none
        stage = None
    return Batch(batch, experiment, runs, stage)
