"""Stage `report` and `esvr report`: the paper's ablation and main tables rebuilt from the MLflow store, beside the
published numbers (tasks/evaluate/paper_results.yaml), with plots, run ids, the dvc.lock hash and a note on what the
run can and cannot show. One self-contained HTML file (images inlined as data URIs, no scripts) and a Markdown
twin whose figures sit in `figures/` next to it.

Pure core: `tables`, `note`, `render_html`, `render_markdown` (a Batch in, text out); `figures` (matplotlib, Agg);
I/O shell: `build` (reads MLflow and dvc.lock, writes DIR/report.html, DIR/report.md, DIR/figures/*.png).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import yaml

from tasks.common import paths
from tasks.common.io import atomic_open
from tasks.evaluate.runs import LOCK_TAG, Batch, VariantRun, load_batch, transcript_markdown

log = logging.getLogger(__name__)

PAPER_FILE = Path(__file__).with_name("paper_results.yaml")
METRICS = ("suggestion", "experience", "information", "overall", "intensity", "seeker_value", "supporter_value")
HEADERS = {"suggestion": "Sugg.↑", "experience": "Expe.↑", "information": "Info.↑", "overall": "Overall↑",
           "intensity": "Intensity↓", "seeker_value": "Seeker-V↑", "supporter_value": "Supporter-V↑"}
TABLES = {"ablation": "Ablation: the teacher with and without target values and reference",
          "main": "Main results: supporters and baselines, with the human ESConv row"}
MINING_STAGES = ("rollouts", "mine_pairs")


def load_paper(path: Path = PAPER_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, row in data["rows"].items():
        unknown = set(row) - {"label", *data["metrics"]}
        if unknown:
            raise ValueError(f"{path}: rows.{key} has unknown keys {sorted(unknown)}")
    return dict(data)


# ------------------------------------------------------------------------------------------ numbers
def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def estimate(run: VariantRun, metric: str) -> dict[str, float | None]:
    e = (run.summary.get("estimates") or {}).get(metric) or {}
    return {"mean": _num(e.get("mean")), "low": _num(e.get("low")), "high": _num(e.get("high")),
            "n": _num(e.get("n"))}


def fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}"


def fmt_est(e: dict[str, float | None], metric: str) -> str:
    if e["mean"] is None:
        return "—"
    ci = f" [{fmt(e['low'], metric)}, {fmt(e['high'], metric)}]" if e["low"] is not None else ""
    return f"{fmt(e['mean'], metric)}{ci}"


def tables(batch: Batch, paper: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows of the ablation and main tables: ours (mean, CI, n) and the paper's number, per metric."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    for run in batch.runs:
        key = run.tags.get("esvr.paper_row") or None
        prow = paper["rows"].get(key, {}) if key else {}
        row = {"variant": run.name, "kind": run.tags.get("esvr.kind", ""), "paper_label": prow.get("label", "—"),
               "n": int(run.metrics.get("dialogues", 0)), "run_id": run.run_id,
               "cells": {m: {"ours": estimate(run, m), "paper": _num(prow.get(m))} for m in METRICS}}
        for t in filter(None, run.tags.get("esvr.tables", "").split(",")):
            if t in out:
                out[t].append(row)
    return out


def diffs(batch: Batch) -> list[dict[str, Any]]:
    rows = []
    for run in batch.runs:
        cells = {m: estimate(run, f"{m}.diff") for m in METRICS}
        if any(c["mean"] is not None for c in cells.values()):
            rows.append({"variant": run.name, "cells": cells})
    return rows


def lock_status(batch: Batch, root: Path) -> dict[str, str]:
    """The evaluate stage's dvc.lock hash on the runs, and whether dvc.lock still says the same."""
    from tasks.common.tracking import lock_entry_hash, read_lock_stages

    tagged = sorted({r.tags.get(LOCK_TAG, "not run by dvc") for r in batch.runs})
    current = "no dvc.lock entry"
    entry = read_lock_stages(root).get("evaluate")
    if entry:
        current = lock_entry_hash(entry)
    return {"runs": ", ".join(tagged), "dvc_lock": current,
            "matches": "yes" if tagged == [current] else "no (the runs come from another state of the DAG)"}


def note(batch: Batch) -> list[str]:
    """What this run can and cannot show, from what it is (profile, sizes, judges)."""
    profile = next((r.tags.get("esvr.profile") for r in batch.runs if r.tags.get("esvr.profile")), "unknown")
    ns = [int(r.metrics.get("dialogues", 0)) for r in batch.runs if r.tags.get("esvr.kind") != "human"]
    n = min(ns) if ns else 0
    params = batch.runs[0].params if batch.runs else {}
    second = params.get("judge.second") not in (None, "", "None")
    lines = [f"Profile `{profile}`; {n} dialogue(s) per variant of {params.get('turns', '?')} supporter turns, "
             f"the same personas and seeker seeds for every variant; intervals are 95 % bootstrap intervals over "
             "dialogues and paired differences resample personas together."]
    if profile == "tiny":
        lines += [
            "Can show: that every path runs end to end — every variant as flags of one policy, the paired seeds, "
            "the judge with its schema and re-asks, the presence-rule value metrics, the statistics, the MLflow runs "
            "and this report — and that the numbers move with what they measure (the human ESConv row is real text).",
            "Cannot show: whether target values, references or DPO help. The tiny seeker, teacher, TVD, RG and judge "
            "are ~1.5M-parameter models trained for minutes on a CPU and write near-random text inside a JSON "
            f"grammar; with {n} dialogue(s) per variant every difference is noise, and the intervals say so. The "
            "paper's columns are GPT-4o-mini on ~2k personas: compare the shape of the tables, not their levels.",
            "Judge circularity: the paper's judge is GPT-4o-mini, the family of its teacher. "
            + ("Here the second judge is the same tiny base sampled hot, so its agreement (κ) measures judge noise, "
               "not family bias; the paper profile names a judge of another family." if second else
               "This run had no second judge, so judge agreement is not measured."),
        ]
    else:
        lines += [
            "Can show: the paper's comparisons on held-out eval personas with intervals, paired differences, a "
            "second judge's agreement and a human-supporter reference row on the same scale.",
            "Cannot show: real seekers' outcomes — the seeker is simulated, and the value metrics are only as good "
            "as the value detector's presence rule on dialogue text (see docs/evaluation.md).",
        ]
    return lines


# ------------------------------------------------------------------------------------------ figures
def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def figures(batch: Batch, paper: dict[str, Any], mining: dict[str, dict[str, list[float]]],
            ) -> dict[str, tuple[str, bytes]]:
    """{file name: (caption, PNG bytes)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out: dict[str, tuple[str, bytes]] = {}
    names = [r.name for r in batch.runs]
    x = np.arange(len(names))
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.5))
    for ax, m in zip(axes.flat, METRICS, strict=False):
        est = [estimate(r, m) for r in batch.runs]
        means = np.array([e["mean"] if e["mean"] is not None else np.nan for e in est])
        lo = np.array([e["mean"] - e["low"] if e["low"] is not None and e["mean"] is not None else 0 for e in est])
        hi = np.array([e["high"] - e["mean"] if e["high"] is not None and e["mean"] is not None else 0 for e in est])
        ax.bar(x, np.nan_to_num(means), yerr=[lo, hi], capsize=3, color="#4c78a8")
        pv = [_num(paper["rows"].get(r.tags.get("esvr.paper_row") or "", {}).get(m)) for r in batch.runs]
        px = [i for i, v in enumerate(pv) if v is not None]
        if px:
            ax.scatter(px, [pv[i] for i in px], marker="D", color="#e45756", zorder=3, label="paper")
        ax.set_title(HEADERS[m])
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    axes.flat[-1].axis("off")
    axes.flat[-1].text(0.0, 0.5, "bars: ours, mean with 95% CI\nred diamonds: the paper", fontsize=9)
    fig.tight_layout()
    out["metrics.png"] = ("Every metric per variant: mean and 95 % bootstrap interval (bars), the paper's number "
                          "(diamonds)", _png(fig))

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    rng = np.random.default_rng(0)
    for ax, m in zip(axes, ("seeker_value", "supporter_value"), strict=True):
        for i, r in enumerate(batch.runs):
            vals = [v for d in r.summary.get("per_dialogue", []) if (v := _num(d.get(m))) is not None]
            if vals:
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(vals)), vals, s=14, alpha=0.6, color="#4c78a8")
                ax.scatter([i], [float(np.mean(vals))], marker="_", s=400, color="black")
        ax.set_title(f"{HEADERS[m]} per dialogue")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    out["values.png"] = ("Distribution of Seeker-Value and Supporter-Value over dialogues (points; bar = mean)",
                         _png(fig))

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    adopt = [r.metrics.get("adoption_rate") for r in batch.runs]
    ax = axes[0]
    ax.bar(x, [a if a is not None else 0 for a in adopt], color="#72b7b2")
    for i, a in enumerate(adopt):
        ax.text(i, (a or 0) + 0.02, "n/a" if a is None else f"{a:.2f}", ha="center", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_title("Reference adoption rate (turns that build on the reference)")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax = axes[1]
    strategies = sorted({k for r in batch.runs for k in r.metrics if k.startswith("strategy.")})
    bottom = np.zeros(len(names))
    cmap = plt.get_cmap("tab10")
    for j, s in enumerate(strategies):
        share = np.array([r.metrics.get(s, 0.0) for r in batch.runs])
        ax.bar(x, share, bottom=bottom, label=s.removeprefix("strategy.").replace("_", " "), color=cmap(j % 10))
        bottom += share
    ax.set_title("Strategy distribution")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    if strategies:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    out["adoption.png"] = ("Reference adoption rate and ESConv strategy distribution per variant", _png(fig))

    if mining:
        fig, axes = plt.subplots(1, len(mining), figsize=(5 * len(mining), 3.5), squeeze=False)
        for ax, (k, h) in zip(axes[0], sorted(mining.items()), strict=True):
            edges = np.asarray(h["edges"])
            ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color="#54a24b")
            ax.set_title(k, fontsize=9)
        fig.tight_layout()
        out["mining.png"] = ("Value reward and ΔR distributions of the supporter's DPO pair mining", _png(fig))
    return out


# ------------------------------------------------------------------------------------------ mining (issue Supporter)
def mining_data(experiment: str, metrics_dir: Path,
                ) -> tuple[dict[str, dict[str, list[float]]], dict[str, float], str]:
    """Reward and ΔR distributions (and scalar reward metrics) of the latest rollouts / mine_pairs stage runs, from
    their JSON artifacts or metrics files; empty with the reason when those stages have not run."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    samples: dict[str, dict[str, list[float]]] = {}
    scalars: dict[str, float] = {}
    found = []
    for stage in MINING_STAGES:
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`esvr.stage` = '{stage}' and "
                                  "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                                  max_results=1) if exp else []
        mf = metrics_dir / f"{stage}.json"
        if not runs and not mf.is_file():
            continue
        found.append(stage)
        if runs:
            r = runs[0]
            scalars.update({f"{stage}: {k}": v for k, v in r.data.metrics.items()
                            if re.search(r"reward|delta", k) and not re.search(r"hist", k)})
            for a in client.list_artifacts(r.info.run_id):
                if a.path.endswith(".json") and not a.is_dir:
                    try:
                        local = client.download_artifacts(r.info.run_id, a.path)
                        _collect(json.loads(Path(local).read_text(encoding="utf-8")), f"{stage}", samples)
                    except (OSError, ValueError) as e:
                        log.warning("mining artifact %s: %s", a.path, e)
        if mf.is_file():
            _collect(json.loads(mf.read_text(encoding="utf-8")), stage, samples)
    why = "" if found else "the supporter stages (rollouts, mine_pairs) have not run in this store"
    return samples, scalars, why


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)


def _collect(obj: Any, prefix: str, out: dict[str, dict[str, list[float]]]) -> None:
    """Distributions under keys that name a reward or a ΔR, anywhere in a JSON document: histograms
    (`{"counts": [...], "edges": [...]}`, as mine_pairs writes them) or raw numeric samples (binned here)."""
    import numpy as np

    if not isinstance(obj, dict):
        return
    for k, v in obj.items():
        key = f"{prefix}.{k}"
        named = re.search(r"reward|delta", k, re.I)
        if named and isinstance(v, dict) and _numbers(v.get("counts")) and _numbers(v.get("edges")) \
                and len(v["edges"]) == len(v["counts"]) + 1 and v["counts"]:
            out[key] = {"counts": [float(c) for c in v["counts"]], "edges": [float(e) for e in v["edges"]]}
        elif named and _numbers(v) and len(v) >= 2:
            counts, edges = np.histogram(np.asarray(v, dtype=float), bins=30)
            out[key] = {"counts": counts.astype(float).tolist(), "edges": edges.tolist()}
        else:
            _collect(v, key, out)


# ------------------------------------------------------------------------------------------ rendering
_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 6px;
text-align:right;vertical-align:top}th{background:#f3f3f3}td.l,th.l{text-align:left}.p{color:#888;font-size:11px}
img{max-width:100%;border:1px solid #eee}pre{background:#fafafa;white-space:pre-wrap;overflow-wrap:anywhere}
code{font-size:12px}
.note{background:#fff8e1;padding:.5em 1em;border-left:4px solid #f0b400}"""


def _short(v: Any) -> str:
    """A logged number as people read it: counts without decimals, shares with three."""
    x = _num(v)
    if x is None:
        return str(v)
    return str(int(x)) if x.is_integer() and abs(x) >= 1 else f"{x:.3f}"


def _e(s: Any) -> str:
    return html.escape(str(s))


def _md(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_html(ctx: dict[str, Any], figs: dict[str, tuple[str, bytes]]) -> str:
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         "<title>esvr evaluation report</title>", f"<style>{_CSS}</style></head><body>",
         "<h1>esvr evaluation report</h1>",
         f"<p>Batch <code>{_e(ctx['batch'])}</code> of MLflow experiment <code>{_e(ctx['experiment'])}</code>, "
         f"built {_e(ctx['built'])}. Paper numbers: {_e(ctx['paper_source'])}.</p>",
         '<div class="note"><h2>What this run can and cannot show</h2>'
         + "".join(f"<p>{_e(x)}</p>" for x in ctx["note"]) + "</div>"]
    for key, title in TABLES.items():
        h.append(f"<h2>{_e(title)}</h2>")
        h.append(f'<table id="{key}-table"><thead><tr><th class="l">variant</th><th class="l">paper row</th>'
                 "<th>n</th>" + "".join(f"<th>{_e(HEADERS[m])}</th>" for m in METRICS) + "</tr></thead><tbody>")
        for row in ctx["tables"][key]:
            cells = "".join(f"<td>{_e(fmt_est(c['ours'], m))}<br><span class=\"p\">paper "
                            f"{_e(fmt(c['paper'], m))}</span></td>" for m, c in row["cells"].items())
            h.append(f"<tr><td class=\"l\">{_e(row['variant'])}</td><td class=\"l\">{_e(row['paper_label'])}</td>"
                     f"<td>{row['n']}</td>{cells}</tr>")
        h.append("</tbody></table>")
        if not ctx["tables"][key]:
            h.append("<p>No variant of this table ran.</p>")
    h.append("<h2>Paired differences against the baseline</h2>")
    h.append(f"<p>Variant minus <code>{_e(ctx['baseline'])}</code> on the same personas, mean [95 % CI].</p>")
    h.append('<table id="diff-table"><thead><tr><th class="l">variant</th>'
             + "".join(f"<th>{_e(HEADERS[m])}</th>" for m in METRICS) + "</tr></thead><tbody>")
    for row in ctx["diffs"]:
        h.append(f"<tr><td class=\"l\">{_e(row['variant'])}</td>" + "".join(
            f"<td>{_e(fmt_est(c, m))}<br><span class=\"p\">n {int(c['n'] or 0)}</span></td>"
            for m, c in row["cells"].items()) + "</tr>")
    h.append("</tbody></table>")
    h += [f"<h2>{_e(title)}</h2>" + _html_table(rows) for title, rows in ctx["extra_tables"]]
    for name, (caption, png) in figs.items():
        b64 = base64.b64encode(png).decode()
        h.append(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
                 f"<figcaption>{_e(caption)} ({_e(name)})</figcaption></figure>")
    if ctx["mining_note"]:
        h.append(f"<p>Reward and ΔR distributions: {_e(ctx['mining_note'])}.</p>")
    h.append("<h2>Example transcripts</h2><p>The supporter's reasoning, target values, reference and adoption "
             "are shown under each reply (quoted); the seeker and the judge saw only the reply.</p>")
    for title, text in ctx["transcripts"]:
        h.append(f"<h3>{_e(title)}</h3><pre>{_e(text)}</pre>")
    h.append("<h2>Runs</h2>" + _html_table(ctx["runs"]))
    h.append("</body></html>")
    return "\n".join(h)


def _html_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(rows[0])
    return ("<table><thead><tr>" + "".join(f'<th class="l">{_e(c)}</th>' for c in cols) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f'<td class="l">{_e(r.get(c, ""))}</td>' for c in cols) + "</tr>"
                      for r in rows) + "</tbody></table>")


def _md_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["none", ""]
    cols = list(rows[0])
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *("| " + " | ".join(_md(r.get(c, "")) for c in cols) + " |" for r in rows), ""]


def render_markdown(ctx: dict[str, Any], figs: dict[str, tuple[str, bytes]], fig_dir: str) -> str:
    md = ["# esvr evaluation report", "",
          f"Batch `{ctx['batch']}` of MLflow experiment `{ctx['experiment']}`, built {ctx['built']}. "
          f"Paper numbers: {ctx['paper_source']}.", "", "## What this run can and cannot show", ""]
    md += [f"{x}\n" for x in ctx["note"]]
    for key, title in TABLES.items():
        md += [f"## {title}", "", "Each cell: ours, mean [95 % CI] (paper).", "",
               "| variant | paper row | n | " + " | ".join(HEADERS[m] for m in METRICS) + " |",
               "|---|---|---|" + "---|" * len(METRICS)]
        for row in ctx["tables"][key]:
            md.append(f"| {_md(row['variant'])} | {_md(row['paper_label'])} | {row['n']} | " + " | ".join(
                f"{fmt_est(c['ours'], m)} ({fmt(c['paper'], m)})" for m, c in row["cells"].items()) + " |")
        md.append("")
    md += ["## Paired differences against the baseline", "",
           f"Variant minus `{ctx['baseline']}` on the same personas, mean [95 % CI].", "",
           "| variant | " + " | ".join(HEADERS[m] for m in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    md += [f"| {_md(r['variant'])} | " + " | ".join(fmt_est(c, m) for m, c in r["cells"].items()) + " |"
           for r in ctx["diffs"]]
    md.append("")
    for title, rows in ctx["extra_tables"]:
        md += [f"## {title}", "", *_md_table(rows)]
    md += ["## Figures", ""]
    md += [f"![{caption}]({fig_dir}/{name})\n" for name, (caption, _) in figs.items()]
    if ctx["mining_note"]:
        md.append(f"Reward and ΔR distributions: {ctx['mining_note']}.\n")
    md += ["## Example transcripts", ""]
    for title, text in ctx["transcripts"]:
        md += [f"### {title}", "", text, ""]
    md += ["## Runs", "", *_md_table(ctx["runs"])]
    return "\n".join(md)


def context(batch: Batch, paper: dict[str, Any], root: Path, mining_scalars: dict[str, float],
            mining_note: str) -> dict[str, Any]:
    """Everything the two renderings show, computed once."""
    lock = lock_status(batch, root)
    stage = batch.stage_run or {}
    skipped = {k.removeprefix("evaluate.skipped."): v for k, v in stage.get("tags", {}).items()
               if k.startswith("evaluate.skipped.")}
    extra: list[tuple[str, list[dict[str, Any]]]] = []
    pw = [{"variant": r.name, "win": fmt(_num(r.metrics.get("pairwise.win")), ""),
           "tie": fmt(_num(r.metrics.get("pairwise.tie")), ""), "loss": fmt(_num(r.metrics.get("pairwise.loss")), ""),
           "n": int(r.metrics.get("pairwise.n", 0))} for r in batch.runs if "pairwise.n" in r.metrics]
    extra.append(("Pairwise against the baseline (both orders; disagreement = tie)", pw))
    dims = ("suggestion", "experience", "information", "overall")
    sm = stage.get("metrics", {})
    kappa = [{"dialogues": "all", **{d: f"{fmt(_num(sm.get(f'kappa.{d}')), '')} (n {int(sm.get(f'kappa.{d}.n', 0))})"
                                     for d in dims}}] if any(f"kappa.{d}.n" in sm for d in dims) else []
    kappa += [{"dialogues": r.name, **{d: fmt(_num(r.metrics.get(f"kappa.{d}")), "") for d in dims}}
              for r in batch.runs if any(f"kappa.{d}" in r.metrics for d in dims)]
    extra.append(("Judge-judge agreement (quadratic-weighted κ, judge vs second judge)", kappa))
    adopt = [{"variant": r.name, "adoption rate": fmt(_num(r.metrics.get("adoption_rate")), ""),
              "malformed answers": fmt(_num(r.metrics.get("malformed_share")), ""),
              "intensity drop": fmt(_num(r.metrics.get("intensity_drop")), "")} for r in batch.runs]
    extra.append(("Adoption, format and intensity drop", adopt))
    planner = {k: v for k, v in (batch.runs[0].params if batch.runs else {}).items() if k.startswith("planner.")}
    if planner:
        extra.append(("PPDPP-style strategy planner (ESConv valid)", [
            {k.removeprefix("planner."): _short(v) for k, v in sorted(planner.items())}]))
    if mining_scalars:
        extra.append(("Value reward (supporter stages)", [{"metric": k, "value": f"{v:.4g}"}
                                                         for k, v in sorted(mining_scalars.items())]))
    if skipped:
        extra.append(("Variants not run", [{"variant": k, "reason": v} for k, v in sorted(skipped.items())]))
    transcripts = []
    for r in batch.runs:
        for d in r.dialogues:
            transcripts.append((f"{r.name}", transcript_markdown(d, d.get("scores"))))
    runs = [{"variant": r.name, "run id": r.run_id, "status": r.status, "kind": r.tags.get("esvr.kind", ""),
             "dvc.lock hash": r.tags.get(LOCK_TAG, "not run by dvc"), "git sha": r.tags.get("git.sha", "")[:12]}
            for r in batch.runs]
    runs.append({"variant": "(evaluate stage)", "run id": batch.batch, "status": "",
                 "kind": f"dvc.lock now: {lock['dvc_lock']}", "dvc.lock hash": f"runs: {lock['runs']}",
                 "git sha": f"match: {lock['matches']}"})
    return {"batch": batch.batch, "experiment": batch.experiment, "paper_source": paper["source"],
            "built": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "note": note(batch),
            "tables": tables(batch, paper), "diffs": diffs(batch), "extra_tables": extra,
            "baseline": (batch.runs[0].params.get("baseline", "?") if batch.runs else "?"),
            "transcripts": transcripts, "runs": runs, "mining_note": mining_note, "lock": lock}


def build(out_dir: Path, experiment: str, stage_experiment: str, transcripts: int, batch_id: str | None = None,
          root: Path | None = None) -> dict[str, Any]:
    """Read the latest (or the given) evaluation batch from MLflow, write DIR/report.html, DIR/report.md and
    DIR/figures/*.png; return a small summary."""
    from tasks.common import tracking

    root = root or paths.ROOT
    tracking.connect()
    batch = load_batch(experiment, batch_id, transcripts)
    if not batch.runs:
        raise LookupError(f"evaluation batch {batch.batch} has no variant runs")
    paper = load_paper()
    samples, scalars, why = mining_data(stage_experiment, root / "metrics")
    figs = figures(batch, paper, samples)
    ctx = context(batch, paper, root, scalars, why)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "figures").mkdir(exist_ok=True)
    for name, (_, png) in figs.items():
        with atomic_open(out_dir / "figures" / name, "wb") as f:
            f.write(png)
    with atomic_open(out_dir / "report.html") as f:
        f.write(render_html(ctx, figs))
    with atomic_open(out_dir / "report.md") as f:
        f.write(render_markdown(ctx, figs, "figures"))
    log.info("report: %s (%d variants, batch %s)", out_dir / "report.html", len(batch.runs), batch.batch)
    return {"batch": batch.batch, "variants": len(batch.runs), "figures": len(figs),
            "ablation_rows": len(ctx["tables"]["ablation"]), "main_rows": len(ctx["tables"]["main"]),
            "lock_matches": ctx["lock"]["matches"] == "yes", "html_bytes": (out_dir / "report.html").stat().st_size}
