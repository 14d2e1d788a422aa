"""Bit-reproducible runs on one kind of machine, declared once (docs/reproducibility.md).

A deterministic stage gives byte-identical outputs when it runs again with the same inputs on the same hardware and
software, because every source of run-to-run variation is pinned here or kept out of its outputs:

* seeds: python, numpy, torch (CPU and CUDA) from the profile's `seed` (`transformers.set_seed`);
* thread counts: a float sum reduced over 2 threads is not the same bits as over 4, so every stage fixes its
  intra-op (and inter-op) thread count instead of taking "all cores";
* algorithms: `torch.use_deterministic_algorithms(True)` (cuBLAS needs `CUBLAS_WORKSPACE_CONFIG`; cuDNN's
  benchmark mode picks kernels by timing, so it is off);
* serialisation: JSON with sorted keys (tasks.common.io), adapter configs with sorted lists (trainers), no
  timestamps, wall times, registry versions or absolute paths in DVC outputs or metrics files: those go to MLflow.

What cannot be bit-identical across hardware (another CPU's SIMD width, another GPU, another CUDA/cuBLAS) is
documented with its tolerance in docs/reproducibility.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

#: cuBLAS picks its reduction split by workspace size; a fixed small workspace makes GEMMs deterministic (NVIDIA docs).
CUBLAS_WORKSPACE = ":4096:8"


def set_threads(threads: int) -> None:
    """Fix torch's intra- and inter-op thread counts (0 = leave torch's default, e.g. on a GPU worker)."""
    if not threads:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)  # work inside one op is what splits sums; between ops, one thread suffices
    except RuntimeError:  # only settable before the first parallel op of the process: then it is already fixed
        pass


def configure(seed: int, threads: int = 0, deterministic: bool = True) -> dict[str, Any]:
    """Seed everything, fix threads and (by default) force deterministic kernels; returns what was set (logged).

    Call it where training or inference starts, before the model is built."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read by cuBLAS when CUDA initialises
    import torch
    from transformers import set_seed

    set_threads(threads)
    set_seed(seed, deterministic=deterministic)  # python, numpy, torch; with deterministic: torch's flag too
    if deterministic:
        # warn_only: an op without a deterministic kernel (rare on CPU) logs instead of failing a day-long run
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    done = {"seed": seed, "threads": torch.get_num_threads(), "deterministic": deterministic}
    log.debug("determinism: %s", done)
    return done
