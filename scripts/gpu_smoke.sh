#!/usr/bin/env bash
# GPU smoke of the paper profile: a few LoRA SFT and DPO steps on the real base model (Llama-3-8B-Instruct by
# default), through the same tasks.trainers code the DAG uses, with bf16 + activation checkpointing from
# profiles/paper.yaml. Prints one JSON line: steps, losses, seconds per step, peak GPU memory.
#
#   ESVR_SMOKE_MODEL=/path/or/hub-id  (default: base_model.name of the paper profile; hub access needs HF_TOKEN)
#   ESVR_SMOKE_STEPS=3                ESVR_MIRROR=/path/to/shared/data (texts for the stand-in records)
#   scripts/gpu_smoke.sh              # ~10 min on one H100 incl. loading 16 GB twice; needs ~60 GB disk free
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-0}"  # the worker may download
WORK="${ESVR_SMOKE_DIR:-$(mktemp -d /tmp/esvr-gpu-smoke.XXXX)}"
PY="${PYTHON:-python}"
"$PY" - "$WORK" <<'PYEOF'
import json, os, sys, time
from pathlib import Path

import torch

from tasks import tiny_lm, trainers
from tasks.config import load_profile

work = Path(sys.argv[1])
if not torch.cuda.is_available():
    sys.exit("gpu_smoke: no CUDA device visible; run this on the GPU worker")
cfg = load_profile("paper")
steps = int(os.environ.get("ESVR_SMOKE_STEPS", "3"))
name = os.environ.get("ESVR_SMOKE_MODEL", cfg.base_model.name)
t = cfg.train
tcfg = t.trainer.model_copy(update={"save_steps": 2, "logging_steps": 1, "gradient_accumulation_steps": 1})
sft_cfg = t.rg_sft.model_copy(update={"max_steps": steps})
dpo_cfg = t.rg_dpo.model_copy(update={"max_steps": steps})

from transformers import AutoTokenizer  # noqa: E402

tok = AutoTokenizer.from_pretrained(name)
tok.chat_template = tiny_lm.chat_template(cfg.base_model.chat_template)
tiny_lm.save_tokenizer(tok, work / "tokenizer")
tok = tiny_lm.load_tokenizer(work / "tokenizer")

mirror = Path(os.environ.get("ESVR_MIRROR", "../shared/data"))
texts = []
if (mirror / "goemotions" / "train.tsv").is_file():
    texts = [l.split("\t")[0] for l in (mirror / "goemotions" / "train.tsv").read_text(encoding="utf-8").splitlines()[:200]]
texts = texts or [f"stand-in seeker post number {i} about a hard week at work" for i in range(200)]
sys_msg = {"role": "system", "content": "Write a short supportive reply that reinforces these values: Achievement, Benevolence: caring."}
sft_rows = [{"messages": [sys_msg, {"role": "user", "content": texts[i]}, {"role": "assistant", "content": texts[i + 1]}]}
            for i in range(0, 100, 2)]
pairs = [{"prompt": [sys_msg, {"role": "user", "content": texts[i]}], "chosen": [{"role": "assistant", "content": texts[i + 1]}],
          "rejected": [{"role": "assistant", "content": texts[i + 2]}]} for i in range(0, 150, 3)]

report = {"model": name, "device": torch.cuda.get_device_name(0), "steps": steps}
t0 = time.time()
torch.cuda.reset_peak_memory_stats()
r = trainers.sft(sft_rows, name, tok, sft_cfg, tcfg, t.lora, cfg.seed, work / "rg_sft", work / "ck_sft",
                 dtype=cfg.base_model.dtype, report_to="none")
report.update(sft_loss=r.train_loss, sft_seconds=r.seconds, sft_peak_gb=round(torch.cuda.max_memory_allocated() / 2**30, 1))
torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
r = trainers.dpo(pairs, r.model_dir, tok, dpo_cfg, tcfg, t.lora, cfg.seed, work / "rg_dpo", work / "ck_dpo",
                 eval_pairs=pairs[:8], dtype=cfg.base_model.dtype, report_to="none")
report.update(dpo_loss=r.train_loss, dpo_seconds=r.seconds, dpo_peak_gb=round(torch.cuda.max_memory_allocated() / 2**30, 1),
              dpo_reward_accuracy=r.eval_metrics.get("eval_rewards/accuracies"), ref_model_is_none=r.eval_metrics.get("ref_model_is_none"),
              total_seconds=round(time.time() - t0, 1))
print(json.dumps(report))
PYEOF
echo "gpu_smoke: outputs in $WORK (delete when done: two merged 8B folders, ~32 GB)" >&2
