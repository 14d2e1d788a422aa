"""GPU smoke of the paper profile: a few LoRA SFT and DPO optimizer steps through the same tasks.train.trainers code the
DAG uses, with the paper's training settings (profiles/paper.yaml: bf16, activation checkpointing, LoRA r16/a32 on
all linear layers, batch 4 x grad-accumulation 8, max_length 1024) on rows of ~max_length tokens. Prints one JSON
line: shape, steps, losses, seconds per optimizer step, tokens/s, peak GPU memory, and an extrapolation to the
paper-scale run (dataset sizes from docs/training.md).

  ESVR_SMOKE_MODEL=random:llama3-8b  offline (documented choice for a worker without hub access): a model with the
                                     exact shape of Meta-Llama-3-8B-Instruct and random bf16 weights, built on the
                                     GPU; tokenizer = models/tokenizer (else a BPE trained on the fly), vocab stays
                                     128256. Timing and memory are those of the real model; losses are not.
  ESVR_SMOKE_MODEL=/path/or/hub-id   the real base model (default: base_model.name of the paper profile; hub access
                                     needs HF_TOKEN, or HF_HUB_OFFLINE=1 with the model in the HF cache)
  ESVR_SMOKE_STEPS=3                 optimizer steps per stage (each = 4 x 8 rows)
  ESVR_SMOKE_DIR=/tmp/...            work folder;  OUT=/dir: the report is also written to $OUT/gpu_smoke.json
  ESVR_MIRROR=/path/to/shared/data   texts for the stand-in records (else random vocabulary words)
  ESVR_SMOKE_SHAPE=tiny ESVR_SMOKE_ALLOW_CPU=1   local test of this script only (random: models): a 2-layer model,
                                     max_length 256, fp32 on CPU; the GPU path always keeps the paper settings.

  ESVR_SMOKE_MODEL=random:llama3-8b scripts/gpu_smoke.sh   # one H100/H200: ~8-10 min; disk peak ~32 GB (random
                                     base + merged SFT; the base is deleted after SFT, merged weights at the end)

Run as `scripts/gpu_smoke.sh` (or `python -m tasks.ops.gpu_smoke WORKDIR`).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tasks import base_model
from tasks.common import paths
from tasks.common.config import load_profile
from tasks.domain import chat_template
from tasks.train import trainers


def trl_defaults(out_dir: str) -> dict:
    """TRL's own SFT/DPO defaults for the settings this smoke fixes, recorded next to ours in the report."""
    import trl

    keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "learning_rate", "bf16",
            "gradient_checkpointing", "lr_scheduler_type", "warmup_ratio", "packing", "padding_free")
    out: dict = {"trl": trl.__version__}
    for name, cls in (("sft", trl.SFTConfig), ("dpo", trl.DPOConfig)):
        c = cls(output_dir=out_dir, use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available())
        out[name] = {k: getattr(c, k) for k in keys if hasattr(c, k)}
    return out


def main(argv: list[str]) -> None:
    """Run the smoke in the work folder argv[0]; print one JSON report line."""
    work = Path(argv[0])
    cfg = load_profile("paper")
    steps = int(os.environ.get("ESVR_SMOKE_STEPS", "3"))
    name = os.environ.get("ESVR_SMOKE_MODEL", cfg.base_model.name)
    random_model = name.startswith("random:")
    shape = os.environ.get("ESVR_SMOKE_SHAPE", "full")
    if random_model and name != "random:llama3-8b":
        sys.exit(f"gpu_smoke: unknown random model {name!r}; known: random:llama3-8b")
    if shape not in ("full", "tiny") or (shape == "tiny" and not random_model):
        sys.exit("gpu_smoke: ESVR_SMOKE_SHAPE=tiny is only for ESVR_SMOKE_MODEL=random:llama3-8b (local test)")
    on_gpu = torch.cuda.is_available()
    cpu_test = not on_gpu and shape == "tiny" and os.environ.get("ESVR_SMOKE_ALLOW_CPU") == "1"
    if not on_gpu and not cpu_test:
        sys.exit("gpu_smoke: no CUDA device visible; run this on the GPU worker "
                 "(a CPU run is only for the local test: ESVR_SMOKE_SHAPE=tiny ESVR_SMOKE_ALLOW_CPU=1)")

    t = cfg.train
    tupd = {"save_steps": 2, "logging_steps": 1}  # gradient_accumulation_steps stays the profile's (8): real optimizer steps
    dtype = cfg.base_model.dtype
    if shape == "tiny":
        tupd["max_length"] = 256
    run = t.run
    if cpu_test:  # local test only: fp32 on the CPU, one thread (the GPU path keeps bf16 from the profile)
        tupd.update(use_cpu=True, bf16=False)
        run = run.model_copy(update={"torch_threads": 1})
        dtype = "float32"
    tcfg = {**t.trainer, **tupd}
    sft_cfg = t.rg_sft.model_copy(update={"args": {**t.rg_sft.args, "max_steps": steps}})
    dpo_cfg = t.rg_dpo.model_copy(update={"args": {**t.rg_dpo.args, "max_steps": steps}})
    L = tcfg["max_length"]
    rows_per_step = tcfg["per_device_train_batch_size"] * tcfg["gradient_accumulation_steps"]
    n_rows = steps * rows_per_step
    dev = "cuda" if on_gpu else "cpu"


    def gpu_gb(fn):
        return round(fn() / 2**30, 2) if on_gpu else None


    # ------------------------------------------------------------------------------------------------ tokenizer
    template = chat_template.template(cfg.base_model.chat_template)
    if random_model:
        src = paths.TOKENIZER
        if (src / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            tok, tok_source = AutoTokenizer.from_pretrained(str(src)), str(src)
        else:  # no locally trained tokenizer: a small byte-level BPE on synthetic text (the model vocab stays 128256)
            rng0 = random.Random(0)
            syll = ["ka", "lo", "mi", "re", "to", "su", "ne", "va", "di", "po", "an", "el", "or", "ing", "th", "st"]
            corpus = [" ".join("".join(rng0.choice(syll) for _ in range(rng0.randint(1, 4))) for _ in range(60))
                      for _ in range(2000)]
            tok, tok_source = base_model.train_tokenizer(corpus, 4000, 2, template), "bpe trained on the fly"
    else:
        from transformers import AutoTokenizer

        tok, tok_source = AutoTokenizer.from_pretrained(name), name
    tok.chat_template = template
    if random_model:
        tok.model_max_length = 8192 if shape == "full" else L
    if random_model and cfg.base_model.chat_template == "llama3":
        # Make the stand-in tokenizer Llama-3-shaped where TRL looks: the turn markers are single special tokens, the
        # end of a turn (<|eot_id|>) is the eos, and newline runs are one pre-token as in Llama-3's split regex (GPT-2's
        # splits "\n\nHi" differently from a trailing "\n\n", which TRL reports as a prompt/completion boundary
        # mismatch). Without this the smoke warns about the tokenizer, not about the pipeline.
        from tokenizers import Regex, pre_tokenizers

        llama3_split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                        r"|\s*[\r\n]+|\s+(?!\S)|\s+")
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(llama3_split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"]})
    chat_template.save_tokenizer(tok, work / "tokenizer")
    tok = chat_template.load_tokenizer(work / "tokenizer")

    # ------------------------------------------------------------------------------------------------ base model
    report: dict[str, Any] = {"model": name, "shape": shape, "tokenizer": tok_source, "tokenizer_vocab": len(tok),
              "device": torch.cuda.get_device_name(0) if on_gpu else "cpu (local test)",
              "torch": torch.__version__, "steps": steps,
              "settings": {"dtype": dtype, "bf16": tcfg["bf16"], "activation_checkpointing": tcfg["activation_checkpointing"],
                           "per_device_train_batch_size": tcfg["per_device_train_batch_size"],
                           "gradient_accumulation_steps": tcfg["gradient_accumulation_steps"], "max_length": L,
                           "lora": {"r": t.lora.r, "alpha": t.lora.alpha, "target_modules": list(t.lora.target_modules)}}}
    import transformers  # noqa: E402

    report["transformers"] = transformers.__version__
    report["trl_defaults"] = trl_defaults(str(work / "trl-defaults"))
    t_start = time.time()
    base_dir = None
    if random_model:
        from transformers import AutoModelForCausalLM, LlamaConfig

        arch: dict[str, Any] = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, max_position_embeddings=8192)  # Meta-Llama-3-8B-Instruct's config.json
        if shape == "tiny":
            arch.update(vocab_size=max(4096, -(-len(tok) // 64) * 64), hidden_size=64, intermediate_size=224,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=1024)
        mcfg = LlamaConfig(**arch, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, rms_norm_eps=1e-5,
                           hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        torch.manual_seed(cfg.seed)
        t0 = time.time()
        with torch.device(dev):  # weights are allocated and initialised on the GPU, in bf16: no 32 GB fp32 pass on the CPU
            model = AutoModelForCausalLM.from_config(mcfg, dtype=getattr(torch, dtype))
        if on_gpu:
            torch.cuda.synchronize()
        report["model_params"] = sum(p.numel() for p in model.parameters())
        report["model_shape"] = {**arch, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                                 "head_dim": arch["hidden_size"] // arch["num_attention_heads"]}
        report["build_seconds"] = round(time.time() - t0, 1)
        base_dir = work / "base"
        t0 = time.time()
        model.save_pretrained(str(base_dir))
        chat_template.save_tokenizer(tok, base_dir)
        report["save_base_seconds"] = round(time.time() - t0, 1)
        del model
        if on_gpu:
            torch.cuda.empty_cache()
        base = str(base_dir)
    else:
        base = name

    # ------------------------------------------------------------------------------------------------ records of ~L tokens
    mirror = Path(os.environ.get("ESVR_MIRROR", "../shared/data"))
    words = []
    if (mirror / "goemotions" / "train.tsv").is_file():
        lines = (mirror / "goemotions" / "train.tsv").read_text(encoding="utf-8").splitlines()[:2000]
        words = [w for line in lines for w in line.split("\t")[0].split()]
    if len(words) < 500:  # random vocabulary words ("Ġword" tokens of the byte-level BPE)
        vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
        words = [v[1:] for v in vocab if isinstance(v, str) and v.startswith("\u0120") and v[1:].isalpha() and len(v) > 3]
    if len(words) < 50:
        words = "I had a hard week at work and my friend did not call me back so I feel alone and tired".split()
    rng = random.Random(cfg.seed)


    def n_tok(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])


    def text_of(n):
        """Text of about n tokens: random words, cut at n tokens and decoded."""
        ids = []
        while len(ids) < n:
            ids += tok(" ".join(rng.choice(words) for _ in range(n)), add_special_tokens=False)["input_ids"]
        return tok.decode(ids[:n], skip_special_tokens=True).strip()


    def conv_len(msgs):
        return n_tok(tok.apply_chat_template(msgs, tokenize=False))


    sys_msg = {"role": "system", "content": "Write a short supportive reply that reinforces these values: Achievement, Benevolence: caring."}
    overhead = conv_len([sys_msg, {"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}])
    budget = L - overhead - 16  # a margin for re-tokenisation at the joins and an appended eos
    U, A = budget // 2, budget - budget // 2


    def assistant_fitting(prompt):
        a = text_of(A)
        while conv_len(prompt + [{"role": "assistant", "content": a}]) > L - 4:
            a = tok.decode(tok(a, add_special_tokens=False)["input_ids"][:-8], skip_special_tokens=True).strip()
        return {"role": "assistant", "content": a}


    sft_rows, pairs = [], []
    for _ in range(n_rows):
        prompt = [sys_msg, {"role": "user", "content": text_of(U)}]
        sft_rows.append({"messages": prompt + [assistant_fitting(prompt)]})
    for _ in range(n_rows + 8):
        prompt = [sys_msg, {"role": "user", "content": text_of(U)}]
        pairs.append({"prompt": prompt, "chosen": [assistant_fitting(prompt)], "rejected": [assistant_fitting(prompt)]})
    eval_pairs, pairs = pairs[-8:], pairs[:-8]
    sft_lens = [conv_len(r["messages"]) for r in sft_rows]
    dpo_lens = [conv_len(p["prompt"] + p["chosen"]) + conv_len(p["prompt"] + p["rejected"]) for p in pairs]
    report.update(sft_rows=len(sft_rows), sft_tokens_per_row=round(statistics.mean(sft_lens), 1), sft_max_row=max(sft_lens),
                  dpo_pairs=len(pairs), dpo_tokens_per_pair_both_sides=round(statistics.mean(dpo_lens), 1))

    # ------------------------------------------------------------------------------------------------ training
    from transformers import TrainerCallback  # noqa: E402


    class StepTimer(TrainerCallback):
        """Wall time of every optimizer step (on_step_end fires once per step, after gradient accumulation)."""

        def __init__(self):
            self.marks = []

        def on_train_begin(self, args, state, control, **kw):
            self.marks = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kw):
            if on_gpu:
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter())

        def per_step(self):
            return [round(b - a, 3) for a, b in zip(self.marks, self.marks[1:], strict=False)]


    def steady(d):  # the first step carries kernel selection / allocator warm-up
        return statistics.median(d[1:]) if len(d) > 1 else (d[0] if d else float("nan"))


    def stage_report(prefix, r, timer, tokens_per_step):
        d = timer.per_step()
        sps = steady(d)
        hist = r.log_history
        report.update({
            f"{prefix}_seconds": r.seconds, f"{prefix}_global_step": r.global_step, f"{prefix}_loss": r.train_loss,
            f"{prefix}_losses": [h["loss"] for h in hist if "loss" in h],
            f"{prefix}_step_seconds": d, f"{prefix}_seconds_per_optimizer_step": round(sps, 3),
            f"{prefix}_tokens_per_second": round(tokens_per_step / sps, 1),
            f"{prefix}_train_runtime": next((h.get("train_runtime") for h in hist if "train_runtime" in h), None),
            f"{prefix}_peak_gpu_gb": gpu_gb(torch.cuda.max_memory_allocated) if on_gpu else None,
            f"{prefix}_peak_reserved_gb": gpu_gb(torch.cuda.max_memory_reserved) if on_gpu else None,
        })
        return sps


    def reset_peak():
        if on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


    reset_peak()
    timer = StepTimer()
    r = trainers.sft(sft_rows, base, tok, sft_cfg, tcfg, run, t.lora, cfg.seed, work / "rg_sft", work / "ck_sft",
                     dtype=dtype, report_to="none", callbacks=[timer])
    sft_sps = stage_report("sft", r, timer, statistics.mean(sft_lens) * rows_per_step)
    sft_num_tokens = next((h["num_tokens"] for h in reversed(r.log_history) if "num_tokens" in h), None)
    report["sft_num_tokens_logged"] = sft_num_tokens
    if base_dir is not None:  # SFT has loaded it and written its merged model: the random base is no longer needed
        shutil.rmtree(base_dir, ignore_errors=True)
    sft_dir = Path(r.model_dir)

    reset_peak()
    timer = StepTimer()
    r = trainers.dpo(pairs, str(sft_dir), tok, dpo_cfg, tcfg, run, t.lora, cfg.seed, work / "rg_dpo", work / "ck_dpo",
                     eval_pairs=eval_pairs, dtype=dtype, report_to="none", callbacks=[timer])
    dpo_sps = stage_report("dpo", r, timer, statistics.mean(dpo_lens) * rows_per_step)
    report.update(dpo_reward_accuracy=r.eval_metrics.get("eval_rewards/accuracies"),
                  dpo_reward_margin=r.eval_metrics.get("eval_rewards/margins"),
                  reference="init with the adapter disabled (trainers.check_reference_is_frozen_init)",
                  total_seconds=round(time.time() - t_start, 1))
    if random_model:  # random weights are worth nothing: drop the merged 8B copies, keep adapters and configs
        for d in (sft_dir, Path(r.model_dir)):
            for f in d.glob("*.safetensors"):
                f.unlink()

    # ------------------------------------------------------------------------------------------------ extrapolation
    # docs/training.md "Paper profile: expected GPU hours": ~20k TVD and ~20k RG-SFT examples of ~400 tokens, 2 epochs
    # each; ~15k DPO pairs of ~500 tokens per side, 1 epoch; effective batch 32.
    A_ = {"tvd_sft": {"examples": 20000, "tokens_per_example": 400, "epochs": 2},
          "rg_sft": {"examples": 20000, "tokens_per_example": 400, "epochs": 2},
          "rg_dpo": {"pairs": 15000, "tokens_per_side": 500, "epochs": 1},
          "effective_batch": rows_per_step, "source": "docs/training.md (estimate section)"}
    sft_steps = math.ceil(20000 * 2 / rows_per_step)
    dpo_steps = math.ceil(15000 * 1 / rows_per_step)
    sft_tok, dpo_tok = 20000 * 400 * 2, 15000 * 500 * 2
    by_tokens = {"tvd_sft": sft_tok / report["sft_tokens_per_second"] / 3600,
                 "rg_sft": sft_tok / report["sft_tokens_per_second"] / 3600,
                 "rg_dpo": dpo_tok / report["dpo_tokens_per_second"] / 3600}
    by_steps = {"tvd_sft": sft_steps * sft_sps / 3600, "rg_sft": sft_steps * sft_sps / 3600, "rg_dpo": dpo_steps * dpo_sps / 3600}
    report["extrapolation"] = {
        "assumptions": A_, "optimizer_steps": {"tvd_sft": sft_steps, "rg_sft": sft_steps, "rg_dpo": dpo_steps},
        "hours_by_tokens": {**{k: round(v, 2) for k, v in by_tokens.items()}, "total": round(sum(by_tokens.values()), 2)},
        "hours_by_steps_rows_at_max_length": {**{k: round(v, 2) for k, v in by_steps.items()}, "total": round(sum(by_steps.values()), 2)},
        "note": ("training only, this device; by_tokens scales the measured tokens/s to the assumed token counts (rows "
                 f"padded per batch); by_steps assumes every row is ~{L} tokens (an upper bound when that exceeds the "
                 "assumed row length). Excludes loading, "
                 "merging/saving (~1-2 min per stage) and generation evals (~0.5 h in docs)."
                 + (" LOCAL CPU TEST with a tiny shape: the figures say nothing about the GPU run." if shape == "tiny" else "")),
    }
    line = json.dumps(report)
    sys.stdout.write(line + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "gpu_smoke.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
