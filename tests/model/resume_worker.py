"""Subprocess body of the kill -9 resume test: one LoRA SFT run that checkpoints every 3 steps.

`python -m tests.model.resume_worker WORKDIR [--slow]`; WORKDIR holds tok/, base/ and data.jsonl from the test.
--slow sleeps after every step (a fault-injection delay so the test can kill the run mid-way).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tasks.common import env
from tasks.common.io import read_jsonl, write_json
from tasks.domain import chat_template
from tasks.train import trainers
from tests.params import group

env.apply_defaults(offline=True)  # before prefect/mlflow/transformers are imported


def main() -> None:
    from transformers import TrainerCallback

    work = Path(sys.argv[1])
    slow = "--slow" in sys.argv
    steps: list[int] = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            steps.append(state.global_step)
            if slow:
                time.sleep(0.4)

    tok = chat_template.load_tokenizer(work / "tok")
    res = trainers.sft(list(read_jsonl(work / "data.jsonl")), str(work / "base"), tok,
                       group("train.tvd", args={"learning_rate": 5.0e-3, "max_steps": 24, "assistant_only_loss": True},
                             eval_limit=0),
                       {**group("train").trainer, "save_steps": 3, "logging_steps": 1, "max_length": 96,
                        "per_device_train_batch_size": 4},
                       group("train.run", keep_checkpoints=True, torch_threads=1),
                       group("train.lora", r=4, alpha=8, modules_to_save=[]), 7, work / "out", work / "ckpt",
                       report_to="none", callbacks=[Count()])
    write_json(work / "result.json", {**{k: v for k, v in res.to_dict().items() if k != "log_history"},
                                      "steps_this_process": steps})
    json.dumps(steps)


if __name__ == "__main__":
    main()
