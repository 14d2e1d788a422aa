"""Where torch work outside the HF Trainer runs: the GPU when there is one (the paper profile's worker), else the
CPU (the tiny profile, CI). The Trainer places its own models (`train.trainer.use_cpu`); this covers the annotators
(training and prediction) and the trained generators' evaluation and serving helpers.

`ESVR_DEVICE=cpu|cuda|cuda:N` overrides the choice (keep a shared GPU free, or pin a card). The device is an
execution setting like a thread count, so it lives in the environment, not in params.yaml.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

ENV = "ESVR_DEVICE"


@functools.cache
def torch_device() -> Any:
    """`torch.device` for this process (decided once): $ESVR_DEVICE, else cuda if available, else cpu."""
    import torch

    want = os.environ.get(ENV, "").strip()
    if want:
        dev = torch.device(want)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{ENV}={want}, but torch sees no CUDA device here; unset it or use {ENV}=cpu")
        return dev
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 encoders (the annotators) at tensor-core speed
        log.info("torch work runs on %s (%s)", dev, torch.cuda.get_device_name(dev))
    return dev
