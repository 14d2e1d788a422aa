"""Generic training tasks on TRL: `sft(dataset, base, ...)` and `dpo(pairs, init, ...)`, both with a PEFT LoRA
adapter configured from params, plus `pretrain()` for the tiny base model.

Every run
* seeds python/numpy/torch and the data order (`seed`, `data_seed`), so two runs with equal inputs match;
* checkpoints under `ckpt_dir` every `save_steps` and, when started again after a crash or a `kill -9`, resumes from
  the last *complete* checkpoint — but only if the fingerprint (data + every setting) is unchanged, so a stale
  checkpoint is never resumed into a different run;
* logs curves to the active MLflow run through the HF callback (`report_to="mlflow"`) with its 170-odd
  TrainingArguments params turned off: the stage logs its own bounded param set;
* writes the LoRA adapter to `<out>/adapter/` and the merged model (`merge_and_unload`) + tokenizer + chat template
  to `<out>/`, atomically (a `.partial` folder renamed at the end), so `esvr serve` and later stages load a plain
  HF folder.

With LoRA, DPO's reference is the initial model with the adapter disabled: `ref_model=None`, no second copy
(asserted by `check_reference_is_frozen_init`). TRL settings are TRL's own config classes (tasks/common/trl_args.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.common import trl_args
from tasks.common.config import DPOStageParams, LoraParams, SFTStageParams, TinyArchParams, TrainRunParams
from tasks.common.hashing import content_id

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "FINGERPRINT.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


class TrainingError(RuntimeError):
    """A training input or setting that cannot work; the message says how to fix it."""


@dataclass
class TrainResult:
    """What a training run produced (paths are strings so the result is JSON- and Prefect-friendly)."""

    model_dir: str
    adapter_dir: str | None
    global_step: int
    train_loss: float
    seconds: float
    resumed_from: str | None = None
    start_step: int = 0  # global step the run started from (the checkpoint's step after a resume, else 0)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    beta: float | None = None  # DPO's KL strength as TRL used it (params or TRL's default): implicit-reward metrics
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seeds, fixed threads and deterministic kernels (tasks/common/determinism.py: bit-identical re-runs)."""
    from tasks.common.determinism import configure

    configure(seed, threads or 0)


def lora_config(lcfg: LoraParams) -> Any:
    """PEFT LoraConfig from `train.lora`."""
    from peft import LoraConfig

    return LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout, target_modules=list(lcfg.target_modules),
                      modules_to_save=list(lcfg.modules_to_save) or None, task_type="CAUSAL_LM")


def _dump(obj: Any) -> Any:
    return obj.model_dump() if hasattr(obj, "model_dump") else obj


def fingerprint(records: list[dict[str, Any]], **settings: Any) -> str:
    """Identity of a run: the training records and every setting that changes the result (train.run does not:
    it says how esvr runs the training, not what it trains)."""
    body = {k: _dump(v) for k, v in settings.items()}
    return content_id({"data": content_id(records, 32), "settings": body}, 32)


def last_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    """Newest `checkpoint-N` with its trainer state written (a kill during a save leaves an incomplete one)."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for p in ckpt_dir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def _step_of(ckpt: Path | None) -> int:
    m = _CKPT_RE.match(ckpt.name) if ckpt else None
    return int(m.group(1)) if m else 0


def prepare_checkpoints(ckpt_dir: Path, fp: str) -> Path | None:
    """Return the checkpoint to resume from, wiping checkpoints that belong to a different run."""
    marker = ckpt_dir / FINGERPRINT_FILE
    if ckpt_dir.is_dir():
        old = json.loads(marker.read_text()) if marker.is_file() else {}
        if old.get("fingerprint") != fp:
            log.info("%s: checkpoints belong to another run (data or settings changed); starting afresh", ckpt_dir)
            shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fp}))
    last = last_complete_checkpoint(ckpt_dir)
    if last:
        log.info("resuming from %s", last)
    return last


def report_target(report_to: str) -> str:
    """'auto' -> 'mlflow' inside an active MLflow run, else 'none'."""
    if report_to != "auto":
        return report_to
    import mlflow

    return "mlflow" if mlflow.active_run() else "none"


def _esvr_set(seed: int, ckpt_dir: Path, report_to: str) -> dict[str, Any]:
    """The TRL fields esvr sets itself (trl_args.RESERVED): never in params, so each is declared once."""
    if report_to == "mlflow":
        # The HF callback would log every TrainingArguments field (~170 params); the stage logs a bounded set itself.
        os.environ["MLFLOW_MAX_LOG_PARAMS"] = "0"
    return {"output_dir": str(ckpt_dir), "seed": seed, "data_seed": seed, "report_to": report_to}


def _load_model(base: str, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))


def canonical_adapter_config(path: Path) -> None:
    """Sort the list fields of a saved PEFT adapter_config.json. PEFT keeps `target_modules` as a set and writes it
    in hash order, which changes with PYTHONHASHSEED: equal weights then give a different folder hash, and DVC
    re-runs every stage downstream of an unchanged model."""
    if not path.is_file():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for k, v in cfg.items():
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            cfg[k] = sorted(v)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _save_outputs(trainer: Any, tok: Any, out_dir: Path, peft: bool) -> str | None:
    """Adapter to <out>/adapter, merged model + tokenizer + template to <out>, via a `.partial` folder."""
    from tasks.domain.chat_template import save_tokenizer

    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    adapter_dir = None
    model = trainer.model
    if peft:
        trainer.save_model(str(partial / "adapter"))
        canonical_adapter_config(partial / "adapter" / "adapter_config.json")
        model = model.merge_and_unload()
    model.save_pretrained(str(partial))
    save_tokenizer(tok, partial)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    if peft:
        adapter_dir = str(out_dir / "adapter")
    return adapter_dir


def _finish(trainer: Any, tok: Any, out_dir: Path, ckpt_dir: Path, run: TrainRunParams, resume: Path | None,
            t0: float, out: Any, peft: bool, eval_metrics: dict[str, float]) -> TrainResult:
    adapter_dir = _save_outputs(trainer, tok, out_dir, peft)
    history = [dict(h) for h in trainer.state.log_history]
    if not run.keep_checkpoints:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    res = TrainResult(model_dir=str(out_dir), adapter_dir=adapter_dir, global_step=int(trainer.state.global_step),
                      train_loss=float(out.training_loss), seconds=round(time.time() - t0, 2),
                      resumed_from=str(resume) if resume else None, start_step=_step_of(resume),
                      eval_metrics={k: float(v) for k, v in eval_metrics.items() if isinstance(v, int | float)},
                      log_history=history)
    log.info("trained %s: %d steps, loss %.4f, %.1f s%s", out_dir, res.global_step, res.train_loss, res.seconds,
             f" (resumed from {resume.name})" if resume else "")
    return res


def _take(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return records[:limit] if limit else records


# --------------------------------------------------------------------------------------------------- trainings
def sft(dataset: list[dict[str, Any]], base: str, tok: Any, scfg: SFTStageParams, trainer_args: dict[str, Any],
        run: TrainRunParams, lcfg: LoraParams | None, seed: int, out_dir: Path, ckpt_dir: Path,
        eval_dataset: list[dict[str, Any]] | None = None, dtype: str = "float32", report_to: str = "auto",
        callbacks: list[Any] | None = None, on_trainer: Any = None) -> TrainResult:
    """Supervised fine-tuning on chat records (`messages`); LoRA when `lcfg` is given. TRL settings: `trainer_args`
    (train.trainer) overlaid by the stage's `scfg.args`."""
    from datasets import Dataset
    from trl import SFTTrainer

    rows = [{"messages": r["messages"]} for r in _take(dataset, scfg.limit)]
    if not rows:
        raise TrainingError(f"SFT into {out_dir}: empty training set; check the dataset files and `limit` in params")
    bad = [i for i, r in enumerate(rows) if not r["messages"] or r["messages"][-1].get("role") != "assistant"]
    if bad:
        raise TrainingError(f"SFT into {out_dir}: records {bad[:5]} do not end with an assistant message")
    evals = [{"messages": r["messages"]} for r in _take(eval_dataset or [], scfg.eval_limit)]
    fp = fingerprint(rows, base=base, stage=scfg, trainer=trainer_args, lora=lcfg, seed=seed, dtype=dtype, kind="sft")
    resume = prepare_checkpoints(ckpt_dir, fp)
    seed_everything(seed, run.torch_threads)
    t0 = time.time()
    args = trl_args.build("sft", trainer_args, scfg.args, **_esvr_set(seed, ckpt_dir, report_target(report_to)))
    trainer = SFTTrainer(model=_load_model(base, dtype), args=args, train_dataset=Dataset.from_list(rows),
                         eval_dataset=Dataset.from_list(evals) if evals else None, processing_class=tok,
                         peft_config=lora_config(lcfg) if lcfg else None, callbacks=callbacks)
    if on_trainer:  # tests inspect the trainer (trainable weights, ref_model) before it runs
        on_trainer(trainer)
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics = trainer.evaluate() if evals else {}
    return _finish(trainer, tok, out_dir, ckpt_dir, run, resume, t0, out, lcfg is not None, metrics)


def check_reference_is_frozen_init(trainer: Any) -> None:
    """The DPO reference we intend: the initial model with the adapter disabled (TRL uses that when the policy is a
    PEFT model and no ref_model is given). Fails loudly if TRL built a second model or the policy is not PEFT."""
    from peft import PeftModel

    if trainer.ref_model is not None:
        raise TrainingError("DPO: TRL built a separate reference model; expected the init with the adapter disabled")
    if not isinstance(trainer.model, PeftModel):
        raise TrainingError("DPO: the policy is not a PEFT model, so 'adapter disabled' is not the init model")


def dpo(pairs: list[dict[str, Any]], init: str, tok: Any, scfg: DPOStageParams, trainer_args: dict[str, Any],
        run: TrainRunParams, lcfg: LoraParams, seed: int, out_dir: Path, ckpt_dir: Path,
        eval_pairs: list[dict[str, Any]] | None = None, dtype: str = "float32", report_to: str = "auto",
        callbacks: list[Any] | None = None, on_trainer: Any = None) -> TrainResult:
    """DPO with a fresh LoRA adapter on `init` (a merged model folder); the reference is `init` with the adapter
    disabled (no second model in memory; checked by `check_reference_is_frozen_init`)."""
    from datasets import Dataset
    from trl import DPOTrainer

    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in _take(pairs, scfg.limit)]
    if not rows:
        raise TrainingError(f"DPO into {out_dir}: no preference pairs; check the pair files and `limit`")
    evals = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
             for r in _take(eval_pairs or [], scfg.eval_limit)]
    fp = fingerprint(rows, base=init, stage=scfg, trainer=trainer_args, lora=lcfg, seed=seed, dtype=dtype, kind="dpo")
    resume = prepare_checkpoints(ckpt_dir, fp)
    seed_everything(seed, run.torch_threads)
    t0 = time.time()
    args = trl_args.build("dpo", trainer_args, scfg.args, **_esvr_set(seed, ckpt_dir, report_target(report_to)))
    trainer = DPOTrainer(model=_load_model(init, dtype), ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                         eval_dataset=Dataset.from_list(evals) if evals else None, processing_class=tok,
                         peft_config=lora_config(lcfg), callbacks=callbacks)
    check_reference_is_frozen_init(trainer)
    if on_trainer:
        on_trainer(trainer)
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics = trainer.evaluate() if evals else {}
    res = _finish(trainer, tok, out_dir, ckpt_dir, run, resume, t0, out, True, metrics)
    res.beta = float(args.beta)
    return res


def pretrain(texts: list[str], model: Any, tok: Any, arch: TinyArchParams, trainer_args: dict[str, Any],
             run: TrainRunParams, seed: int, out_dir: Path, ckpt_dir: Path, report_to: str = "auto") -> TrainResult:
    """Full-parameter causal-LM training of the tiny base on corpus texts (tiny profile only)."""
    from datasets import Dataset
    from trl import SFTTrainer

    if not texts:
        raise TrainingError("pretrain: empty corpus")
    fp = fingerprint([{"t": t} for t in texts], arch=arch, trainer=trainer_args, seed=seed, kind="pretrain")
    resume = prepare_checkpoints(ckpt_dir, fp)
    seed_everything(seed, run.torch_threads)
    t0 = time.time()
    # Packing fills every row of a batch with corpus tokens: short Reddit comments would otherwise be mostly padding.
    own = {"learning_rate": arch.pretrain_learning_rate, "max_steps": arch.pretrain_steps, "num_train_epochs": 1.0,
           "per_device_train_batch_size": arch.pretrain_batch_size, "max_length": arch.pretrain_max_length,
           "packing": True, "dataset_text_field": "text"}
    args = trl_args.build("sft", trainer_args, own, **_esvr_set(seed, ckpt_dir, report_target(report_to)))
    model_dir = Path(out_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_dir.with_name(model_dir.name + ".init")
    model.save_pretrained(str(tmp))  # a saved init so a resumed run starts from an identical model object
    trainer = SFTTrainer(model=_load_model(str(tmp), "float32"), args=args,
                         train_dataset=Dataset.from_list([{"text": t} for t in texts]), processing_class=tok)
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    res = _finish(trainer, tok, model_dir, ckpt_dir, run, resume, t0, out, False, {})
    shutil.rmtree(tmp, ignore_errors=True)
    return res
