"""The generic TRL trainers on a tiny Llama built from a config: they learn, save a servable merged model, run DPO
with the LoRA-disabled base as reference, reload from the MLflow registry, and resume after kill -9."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks import base_model
from tasks.common import registry
from tasks.common.io import read_json, write_jsonl
from tasks.domain import chat_template
from tasks.train import evaluation as train_eval
from tasks.train import trainers
from tasks.train.common import load_causal_lm
from tests.model import synth
from tests.params import group

ROOT = Path(__file__).resolve().parents[2]
TC = {**group("train").trainer, "max_length": 96, "save_steps": 1000, "logging_steps": 1, "per_device_train_batch_size": 4}
RUN = group("train.run", torch_threads=1)
LORA = group("train.lora", r=4, alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=[])


def sft_cfg(**args):
    return group("train.tvd", args={"assistant_only_loss": True, **args}, eval_limit=0)


def dpo_cfg(**args):
    return group("train.rg_dpo", args={"beta": 0.1, **args}, eval_limit=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, mirror):
    """Tokenizer (with chat_template.jinja) and a 2-layer base model saved to disk, plus SFT rows and DPO pairs."""
    work = tmp_path_factory.mktemp("tiny")
    rows = synth.goemotions(mirror, 160)
    tok = base_model.train_tokenizer([t for t, _ in rows], 600, 2, chat_template.template("chatml"))
    chat_template.save_tokenizer(tok, work / "tok")
    arch = group("base_model.tiny", hidden_size=64, intermediate_size=128)
    base_model.build_tiny_llama(tok, arch, 1).save_pretrained(str(work / "base"))
    chat_template.save_tokenizer(tok, work / "base")
    sft_rows = [{"messages": [{"role": "user", "content": t},
                              {"role": "assistant", "content": "Values: " + "; ".join(synth.values_for(e))}]} for t, e in rows]
    pairs = [{"prompt": [{"role": "user", "content": rows[i][0]}],
              "chosen": [{"role": "assistant", "content": "You care about honesty."}],
              "rejected": [{"role": "assistant", "content": rows[i + 1][0]}]} for i in range(0, 120, 2)]
    return {"work": work, "tok": chat_template.load_tokenizer(work / "tok"), "sft": sft_rows, "pairs": pairs}


def _trainable(trainer) -> dict:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def _at_end(store: dict):
    """Callback that snapshots the trainable weights when training ends (before the adapter is merged away)."""
    from transformers import TrainerCallback

    class Snap(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kw):  # noqa: ANN001
            store["after"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    return Snap()


def test_chat_template_artifact_required(tmp_path, tiny):
    assert (tiny["work"] / "tok" / chat_template.TEMPLATE_FILE).read_text() == tiny["tok"].chat_template
    with pytest.raises(chat_template.TemplateError, match="chat_template.jinja"):
        chat_template.load_tokenizer(tmp_path)


def test_sft_lora_learns_saves_merged_model_that_generates(tmp_path, tiny):
    seen: dict = {}
    res = trainers.sft(tiny["sft"], str(tiny["work"] / "base"), tiny["tok"], sft_cfg(learning_rate=1.0e-2, max_steps=8),
                       TC, RUN, LORA, 3, tmp_path / "sft", tmp_path / "ck", report_to="none", callbacks=[_at_end(seen)],
                       on_trainer=lambda t: seen.update(trainer=t, before=_trainable(t)))
    after = seen["after"]
    assert seen["before"] and all("lora_" in n for n in seen["before"])  # only the adapter trains
    changed = [n for n, p in seen["before"].items() if not (after[n] - p).abs().max() == 0]
    assert len(changed) >= len(seen["before"]) // 2, "LoRA weights did not move with a high lr"
    assert math.isfinite(res.train_loss) and res.global_step == 8
    assert (Path(res.adapter_dir) / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "ck").exists()  # checkpoints dropped after success (keep_checkpoints=false)
    model, tok = load_causal_lm(res.model_dir)
    gen = train_eval.generate(model, tok, [tiny["sft"][0]["messages"][:-1]], 8, 1, 96)
    assert isinstance(gen[0], str)
    assert tok.chat_template == tiny["tok"].chat_template  # the template travels with the model


def test_sft_is_deterministic(tmp_path, tiny):
    cfg = sft_cfg(learning_rate=1.0e-2, max_steps=4)
    a = trainers.sft(tiny["sft"], str(tiny["work"] / "base"), tiny["tok"], cfg, TC, RUN, LORA, 5, tmp_path / "a", tmp_path / "ca",
                     report_to="none")
    b = trainers.sft(tiny["sft"], str(tiny["work"] / "base"), tiny["tok"], cfg, TC, RUN, LORA, 5, tmp_path / "b", tmp_path / "cb",
                     report_to="none")
    assert a.train_loss == b.train_loss


def test_dpo_with_lora_has_no_reference_model(tmp_path, tiny):
    seen: dict = {}
    res = trainers.dpo(tiny["pairs"], str(tiny["work"] / "base"), tiny["tok"], dpo_cfg(learning_rate=1.0e-2, max_steps=6),
                       TC, RUN, LORA, 3, tmp_path / "dpo", tmp_path / "ck", eval_pairs=tiny["pairs"][:8], report_to="none",
                       callbacks=[_at_end(seen)], on_trainer=lambda t: seen.update(ref=t.ref_model, before=_trainable(t), trainer=t))
    assert seen["ref"] is None and seen["trainer"].ref_model is None  # reference = base with the adapter disabled
    after = seen["after"]
    assert any((after[n] - p).abs().max() > 0 for n, p in seen["before"].items())
    assert math.isfinite(res.train_loss) and "eval_rewards/accuracies" in res.eval_metrics
    assert (Path(res.model_dir) / "config.json").is_file()


def test_registered_model_reloads_from_mlflow_and_generates(tmp_path, tiny, mlflow_store):
    import mlflow

    res = trainers.sft(tiny["sft"][:32], str(tiny["work"] / "base"), tiny["tok"], sft_cfg(max_steps=2), TC, RUN, LORA, 3,
                       tmp_path / "m", tmp_path / "ck", report_to="none")
    with mlflow.start_run():
        version = registry.register(Path(res.model_dir), "tvd", ["sft", "champion"])
    path = registry.resolve("models:/tvd@champion")
    assert (path / chat_template.TEMPLATE_FILE).is_file() and (path / "adapter").is_dir()
    model, tok = load_causal_lm(path)
    out = train_eval.generate(model, tok, [tiny["sft"][1]["messages"][:-1]], 6, 1, 96)
    assert len(out) == 1 and version == "1"


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tmp_path, tiny):
    work = tmp_path
    for d in ("tok", "base"):
        subprocess.run(["cp", "-r", str(tiny["work"] / d), str(work / d)], check=True)
    write_jsonl(work / "data.jsonl", tiny["sft"][:120])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.model.resume_worker", str(work)]
    proc = subprocess.Popen([*cmd, "--slow"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and trainers.last_complete_checkpoint(work / "ckpt") is None:
        time.sleep(0.5)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up, like a lost machine
    proc.wait()
    killed_at = trainers.last_complete_checkpoint(work / "ckpt")
    assert killed_at is not None and not (work / "result.json").exists(), "the run finished before it was killed"
    assert not (work / "out").exists()  # no half-written model
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    res = read_json(work / "result.json")
    start = int(killed_at.name.split("-")[1])
    assert res["resumed_from"].endswith(killed_at.name) and res["start_step"] == start >= 3
    assert res["global_step"] == 24 and res["steps_this_process"][0] == start + 1  # it continued, not restarted
    assert len(res["steps_this_process"]) == 24 - start and math.isfinite(res["train_loss"])


def test_dpo_reference_check_fails_on_a_second_model():
    """The reference we intend is the init with the adapter disabled: a trainer holding a separate ref_model, or a
    policy that is not a PEFT model, is refused."""
    from types import SimpleNamespace

    with pytest.raises(trainers.TrainingError, match="separate reference"):
        trainers.check_reference_is_frozen_init(SimpleNamespace(ref_model=object(), model=object()))
    with pytest.raises(trainers.TrainingError, match="not a PEFT model"):
        trainers.check_reference_is_frozen_init(SimpleNamespace(ref_model=None, model=object()))
