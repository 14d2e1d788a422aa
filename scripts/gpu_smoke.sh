#!/usr/bin/env bash
# GPU smoke of the paper profile: a few LoRA SFT and DPO optimizer steps through the same tasks.train.trainers code the
# DAG uses, with the paper's training settings (profiles/paper.yaml: bf16, activation checkpointing, LoRA r16/a32 on
# all linear layers, batch 4 x grad-accumulation 8, max_length 1024) on rows of ~max_length tokens. Prints one JSON
# line: shape, steps, losses, seconds per optimizer step, tokens/s, peak GPU memory, and an extrapolation to the
# paper-scale run (dataset sizes from docs/training.md).
#
#   ESVR_SMOKE_MODEL=random:llama3-8b  offline (documented choice for a worker without hub access): a model with the
#                                      exact shape of Meta-Llama-3-8B-Instruct and random bf16 weights, built on the
#                                      GPU; tokenizer = models/tokenizer (else a BPE trained on the fly), vocab stays
#                                      128256. Timing and memory are those of the real model; losses are not.
#   ESVR_SMOKE_MODEL=/path/or/hub-id   the real base model (default: base_model.name of the paper profile; hub access
#                                      needs HF_TOKEN, or HF_HUB_OFFLINE=1 with the model in the HF cache)
#   ESVR_SMOKE_STEPS=3                 optimizer steps per stage (each = 4 x 8 rows)
#   ESVR_SMOKE_DIR=/tmp/...            work folder;  OUT=/dir: the report is also written to $OUT/gpu_smoke.json
#   ESVR_MIRROR=/path/to/shared/data   texts for the stand-in records (else random vocabulary words)
#   ESVR_SMOKE_SHAPE=tiny ESVR_SMOKE_ALLOW_CPU=1   local test of this script only (random: models): a 2-layer model,
#                                      max_length 256, fp32 on CPU; the GPU path always keeps the paper settings.
#
#   ESVR_SMOKE_MODEL=random:llama3-8b scripts/gpu_smoke.sh   # one H100/H200: ~8-10 min; disk peak ~32 GB (random
#                                      base + merged SFT; the base is deleted after SFT, merged weights at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-0}"  # the worker may download
WORK="${ESVR_SMOKE_DIR:-$(mktemp -d /tmp/esvr-gpu-smoke.XXXX)}"
mkdir -p "$WORK"
PY="${PYTHON:-python}"
"$PY" -m tasks.ops.gpu_smoke "$WORK"
# vLLM serving of the real base + the smoke's SFT LoRA adapter (a random: model's weights are deleted above)
if [[ "${ESVR_SMOKE_MODEL:-}" == random:* ]]; then
  echo "gpu_smoke: serving smoke needs real base weights (ESVR_SMOKE_MODEL=hub id or folder): skipped" >&2
elif command -v vllm >/dev/null 2>&1 && [ -z "${ESVR_SMOKE_SKIP_SERVE:-}" ]; then
  ESVR_SMOKE_BASE="${ESVR_SMOKE_MODEL:-}" ESVR_SMOKE_ADAPTERS="${ESVR_SMOKE_ADAPTERS:-sft=$WORK/rg_sft/adapter}" \
    "$PY" -m tasks.ops.serve_smoke
else
  echo "gpu_smoke: vllm not on PATH: serving smoke skipped (docker/Dockerfile.gpu installs it)" >&2
fi
echo "gpu_smoke: outputs in $WORK (adapters, tokenizer; merged folders of a hub model are ~16 GB each: delete when done)" >&2
