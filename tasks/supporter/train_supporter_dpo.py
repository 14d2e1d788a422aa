"""Stage `train_supporter_dpo` (ES-VR: value-reward pairs) and, through `run_supporter_dpo(kind="emotion")`, stage
`train_supporter_emotion_dpo` (the Emotion-DPO baseline: emotion-reward pairs of the same rollouts).

LoRA DPO whose reference is the SFT supporter. What TRL 1.16 does (trl/trainer/dpo_trainer.py):
* a plain model + a fresh `peft_config` (what `tasks.train.trainers.dpo` passes, with the *merged* SFT model):
  `get_peft_model` wraps it, `ref_model` stays None and the reference log-probs are computed with the adapter
  disabled, i.e. by the merged SFT weights;
* a `PeftModel` with a loaded adapter and no `peft_config`: TRL copies the adapter into a frozen "ref" adapter and
  keeps training the loaded one (reference = the loaded adapter on its base);
* a `PeftModel` together with a `peft_config`: ValueError.
We use the first, and assert it: no separate reference model, no "ref" adapter, the policy's base is the SFT
folder, and the reference's log-probs of probe pairs, taken through TRL's own `use_adapter` switch before and
after training, equal those of the SFT model loaded on its own (`reference.max_abs_diff` in the metrics).

Rows are left-truncated by tasks/supporter/examples.py and checked on TRL's tokenised dataset (no pair loses a
response). SFT and DPO are evaluated side by side on held-out pairs. Registered as `supporter`, alias `dpo`
(`emotion-dpo` for the baseline); `champion` moves to the DPO version when it prefers the held-out chosen answers
at least as often as the SFT supporter and writes well-formed answers at least as often (the baseline never does).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

from tasks.common import paths, registry
from tasks.common.config import Params
from tasks.domain import chat_template
from tasks.supporter import examples as ex
from tasks.supporter import plots
from tasks.supporter.evaluation import answer_stats
from tasks.train import evaluation as train_eval
from tasks.train import trainers
from tasks.train.common import SUPPORTER_MODEL, TrainStageError, finite, load_causal_lm, log_curves, read_split

log = logging.getLogger(__name__)

Kind = Literal["value", "emotion"]
#: stage name, output folder, registry alias and params group per reward kind
SPEC: dict[str, tuple[str, str, str, str]] = {
    "value": ("train_supporter_dpo", paths.SUPPORTER_DPO.name, "dpo", "supporter_dpo"),
    "emotion": ("train_supporter_emotion_dpo", paths.SUPPORTER_EMOTION_DPO.name, "emotion-dpo",
                "supporter_emotion_dpo"),
}
PROBE_PAIRS = 4
#: Reference log-probs may differ from the SFT model's by float noise only (same weights, same inputs).
REFERENCE_TOL = 1e-3


class ReferenceError_(TrainStageError):  # noqa: N801 - "ReferenceError" is a builtin
    """The DPO reference is not the SFT supporter."""


def reference_logps(trainer: Any, rows: list[dict[str, Any]], tok: Any, max_length: int) -> list[float]:
    """log p_ref(chosen | prompt) of `rows`, computed the way TRL computes its reference (trl.trainer.utils
    `use_adapter`: the "ref" adapter when there is one, else every adapter disabled)."""
    from trl.trainer.utils import use_adapter

    model = trainer.accelerator.unwrap_model(trainer.model)
    with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
        s, _ = train_eval.completion_logps(model, tok, [r["prompt"] for r in rows], [r["chosen"] for r in rows],
                                           max_length, len(rows))
    return s


def assert_reference_setup(trainer: Any, sft_dir: Path) -> None:
    """The trainer's reference must be the SFT supporter with the adapter disabled (see the module docstring)."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    problems = []
    if trainer.ref_model is not None:
        problems.append("a separate ref_model was created")
    if not isinstance(model, PeftModel):
        problems.append(f"the policy is a {type(model).__name__}, not a PeftModel")
    elif "ref" in model.peft_config:
        problems.append("TRL added a 'ref' adapter (a loaded adapter was passed instead of a fresh peft_config)")
    else:
        base = Path(str(getattr(model.get_base_model().config, "_name_or_path", ""))).resolve()
        if base != sft_dir.resolve():
            problems.append(f"the policy's base is {base}, not the SFT supporter {sft_dir}")
    if problems:
        raise ReferenceError_("DPO reference is not the SFT supporter: " + "; ".join(problems))


def _take(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return rows[:limit] if limit else rows


def skip_without_pairs(kind: Kind, out: Path, pairs_dir: Path, register_model: bool) -> dict[str, Any]:
    """No pairs and `min_pairs` 0: the stage ends without training. Its output folder holds only `skipped.json`
    (no weights that could pass for a DPO model), nothing is registered, so the evaluation skips that variant."""
    import shutil

    reason = paths.portable_text(f"{pairs_dir}/train.jsonl has no pairs (rewards tie: see metrics/mine_pairs.json)")
    log.warning("%s DPO skipped: %s", kind, reason)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "skipped.json").write_text(json.dumps({"kind": kind, "reason": reason}, indent=2) + "\n")
    metrics: dict[str, Any] = {"kind": kind, "skipped": 1, "pairs.train": 0}
    if register_model:
        import mlflow

        mlflow.set_tag("skipped", reason)
        mlflow.log_metrics({"skipped": 1.0})
        try:  # an alias left by an earlier run would make the evaluation load a model this run did not train
            mlflow.MlflowClient().delete_registered_model_alias(SUPPORTER_MODEL, SPEC[kind][2])
        except mlflow.exceptions.MlflowException:
            pass
    return metrics


def run_supporter_dpo(cfg: Params, kind: Kind = "value", pairs_dir: Path | None = None, models: Path | None = None,
                      ckpt_root: Path | None = None, register_model: bool = True) -> dict[str, Any]:
    """DPO of the SFT supporter on the `kind` pairs; SFT vs DPO side by side on held-out pairs."""
    from transformers import TrainerCallback

    stage, out_name, alias, group = SPEC[kind]
    pairs_dir = (pairs_dir or paths.PAIRS) / kind
    models = models or paths.MODELS
    ckpt_root = ckpt_root or paths.CHECKPOINTS
    t = cfg.train
    scfg = getattr(t, group)
    ml = int(ex.effective(t.trainer, scfg.args, "max_length"))
    bs = int(ex.effective(t.trainer, scfg.args, "per_device_eval_batch_size"))
    sft_dir = models / paths.SUPPORTER_SFT.name
    tok = chat_template.load_tokenizer(sft_dir)  # the template the SFT stage trained with
    train, val = read_split(pairs_dir, "train"), read_split(pairs_dir, "validation", required=False)
    if not train and cfg.supporter.pairs.min_pairs == 0:
        return skip_without_pairs(kind, models / out_name, pairs_dir, register_model)
    if len(train) < cfg.supporter.pairs.min_pairs:
        raise TrainStageError(f"{pairs_dir}/train.jsonl has {len(train)} pairs < supporter.pairs.min_pairs="
                              f"{cfg.supporter.pairs.min_pairs}")
    if not train:
        key = "t_diff" if kind == "value" else "emotion_t_diff"
        raise TrainStageError(f"{pairs_dir}/train.jsonl has no pairs (metrics/mine_pairs.json: {kind}.above_t_diff, "
                              f"{kind}.reward.std): lower supporter.pairs.{key}, roll out more states, or check the "
                              "scorer (a presence rule that flags every target in every turn gives equal rewards)")
    fit_train, fit_val = ex.dpo_rows(train, tok, ml), ex.dpo_rows(val, tok, ml)
    rows = _take(fit_train.rows, scfg.limit)
    if not rows:
        raise TrainStageError(f"{stage}: no pair fits train.trainer.max_length={ml}")
    probe = (fit_val.rows or rows)[:PROBE_PAIRS]
    ref: dict[str, list[float]] = {}

    holder: dict[str, Any] = {}

    def on_trainer(trainer: Any) -> None:
        holder["trainer"] = trainer
        ex.check_dpo_dataset(trainer.train_dataset, rows, ml, stage)
        assert_reference_setup(trainer, sft_dir)
        ref["before"] = reference_logps(trainer, probe, tok, ml)

    class AfterTraining(TrainerCallback):  # before the adapter is merged away by the save
        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ref["after"] = reference_logps(holder["trainer"], probe, tok, ml)

    res = trainers.dpo(rows, str(sft_dir), tok, scfg, t.trainer, t.run, t.lora, cfg.seed, models / out_name,
                       ckpt_root / stage, eval_pairs=fit_val.rows or None, dtype=cfg.base_model.dtype,
                       callbacks=[AfterTraining()], on_trainer=on_trainer)

    # SFT vs DPO on held-out pairs (validation dialogues; the training pairs when there are none)
    held = fit_val.rows or rows
    prompts_ev = [r["prompt"] for r in _take(held, t.supporter_eval.limit)]
    side: dict[str, dict[str, float]] = {}
    logps: dict[str, tuple[list[float], list[float]]] = {}
    examples: dict[str, list[str]] = {}
    t0 = time.time()
    for name, folder in (("sft", sft_dir), (alias, models / out_name)):
        model, mtok = load_causal_lm(folder, cfg.base_model.dtype)
        c, _ = train_eval.completion_logps(model, mtok, [r["prompt"] for r in held], [r["chosen"] for r in held], ml, bs)
        rj, _ = train_eval.completion_logps(model, mtok, [r["prompt"] for r in held], [r["rejected"] for r in held],
                                            ml, bs)
        logps[name] = (c, rj)
        if name == "sft":
            sft_probe, _ = train_eval.completion_logps(model, mtok, [r["prompt"] for r in probe],
                                                       [r["chosen"] for r in probe], ml, len(probe))
        gens = train_eval.generate(model, mtok, prompts_ev, t.supporter_eval.max_new_tokens,
                                   t.supporter_eval.batch_size, ml)
        examples[name] = gens[:10]
        side[name] = answer_stats(gens, "student")
        del model
    diff = max(abs(a - b) for key in ("before", "after") for a, b in zip(ref[key], sft_probe, strict=True))
    if not diff <= REFERENCE_TOL:
        raise ReferenceError_(f"{stage}: reference log-probs differ from the SFT supporter's by {diff:.3g} "
                              f"(> {REFERENCE_TOL}): the DPO reference is not the SFT supporter")
    beta = res.beta if res.beta is not None else 0.1  # TRL's value as it trained (params or its default)
    side[alias].update(train_eval.preference_metrics(*logps[alias], *logps["sft"], beta=beta))
    side["sft"].update(train_eval.preference_metrics(*logps["sft"]))
    metrics: dict[str, Any] = {
        "kind": kind, "train_loss": res.train_loss, "global_step": res.global_step, "train_seconds": res.seconds,
        "eval_seconds": round(time.time() - t0, 2), "pairs.train": len(train), "pairs.validation": len(val),
        "eval_on": "validation" if fit_val.rows else "train", "reference.max_abs_diff": diff,
        "reference.is_sft": 1, **fit_train.metrics("fit.train"), **fit_val.metrics("fit.validation"),
        "eval_loss": res.eval_metrics.get("eval_loss", math.nan)}
    for name, m in side.items():
        metrics.update({f"{name}.{k}": v for k, v in m.items()})
    if kind == "value":  # ES-VR's DPO replaces the SFT champion only if it is not worse on held-out pairs and format
        metrics["champion_is_dpo"] = int(side[alias]["pref_accuracy"] >= side["sft"]["pref_accuracy"]
                                         and side[alias]["student.well_formed_share"]
                                         >= side["sft"]["student.well_formed_share"])
    metrics.update({f"train.{k.replace('/', '_')}": v for k, v in res.eval_metrics.items() if "rewards" in k})
    log.info("%s: held-out %s", stage, {k: round(v, 4) for k, v in finite(metrics).items()})
    if register_model:
        import mlflow

        log_curves(res, alias)
        mlflow.log_metrics(finite(metrics))
        mlflow.log_dict(examples, f"{out_name}_examples.json")
        plots.log_figure(plots.bars({n: side[n].get("student.adoption_rate", 0.0) for n in side},
                                    "adoption of the reference, SFT vs DPO", "share 'Yes'"), "adoption_rate.png")
        margins = [c - r for c, r in zip(*logps[alias], strict=True)]
        plots.log_figure(plots.histogram(margins, f"{alias}: log p(chosen) - log p(rejected), held out", "margin"),
                         "logp_margin.png")
        metrics["model_version"] = registry.register(models / out_name, SUPPORTER_MODEL, [alias],
                                                     files=t.run.mlflow_log)
        if kind == "value" and metrics["champion_is_dpo"]:
            registry.set_alias(SUPPORTER_MODEL, "champion", metrics["model_version"])
        mlflow.set_tag("champion", alias if metrics.get("champion_is_dpo") else "sft")
    return metrics
