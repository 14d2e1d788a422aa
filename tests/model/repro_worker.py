"""Subprocess body of the reproducibility test: the train_tvd core (LoRA SFT + portable adapter) from scratch.

`python -m tests.model.repro_worker WORKDIR OUT`; WORKDIR holds tok/, base/ and data.jsonl from the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tasks.common import env
from tasks.common.io import read_jsonl
from tasks.domain import chat_template
from tasks.train import portable, trainers
from tests.params import group

env.apply_defaults(offline=True)  # before prefect/mlflow/transformers are imported


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    tok = chat_template.load_tokenizer(work / "tok")
    trainers.sft(list(read_jsonl(work / "data.jsonl")), str(work / "base"), tok,
                 group("train.tvd", args={"learning_rate": 5.0e-3, "max_steps": 6, "assistant_only_loss": True},
                       eval_limit=0),
                 {**group("train").trainer, "save_steps": 3, "logging_steps": 1, "max_length": 96,
                  "per_device_train_batch_size": 4},
                 group("train.run", torch_threads=1),
                 group("train.lora", r=4, alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], modules_to_save=[]),
                 7, out, out.with_name(out.name + "-ckpt"), report_to="none")
    portable.finalize(out, str(work / "base"), root=work)


if __name__ == "__main__":
    main()
