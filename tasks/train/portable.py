"""Self-contained trained models: every `<model>/adapter/` applies to the *base model* under a portable name.

A registered version (`train.trainer.mlflow_log: adapter` on the GPU worker) holds the adapter, tokenizer and
template, not the 16 GB merged weights, so it must name its base in a way another machine can load: the hub id
(paper) or the project-relative folder (`models/base`, tiny), never this machine's absolute path.

DPO trains its adapter on the *merged SFT model*, so that adapter alone on the base would drop the SFT weights
(vLLM serves adapters on the base). `compose()` writes one base-relative adapter instead: for every LoRA module,
W + s1·B1A1 + s2·B2A2 = W + [√s1·B1 | √s2·B2]·[√s1·A1 ; √s2·A2], i.e. the two adapters concatenated along the rank
(rank r1 + r2, alpha = rank so the scaling is 1): exact, no base weights needed. modules_to_save (full copies) come
from the later run, which started from the SFT run's. The DPO-only adapter stays in `adapter_delta/`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from tasks.common import paths

log = logging.getLogger(__name__)

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def portable_name(base: str, root: Path | None = None) -> str:
    """A hub id stays; a folder inside the project becomes project-relative; another folder stays absolute."""
    root = (root or paths.ROOT).resolve()
    p = Path(base)
    if not p.is_absolute():
        return base
    try:
        return p.resolve().relative_to(root).as_posix()
    except ValueError:
        return base


def _write_config(folder: Path, cfg: dict[str, Any]) -> None:
    for k, v in cfg.items():  # sorted lists and keys: equal adapters give equal bytes (see trainers)
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            cfg[k] = sorted(v)
    (folder / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def make_portable(adapter_dir: Path, base: str, root: Path | None = None) -> None:
    """Point `adapter_dir`'s config at `base` under its portable name (the base the adapter applies to)."""
    cfg_path = Path(adapter_dir) / CONFIG
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = portable_name(base, root)
    _write_config(Path(adapter_dir), cfg)


def _scaling(cfg: dict[str, Any]) -> float:
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def compose(parent: Path, child: Path, out: Path) -> dict[str, Any]:
    """Write to `out` the adapter equal to `parent` followed by `child` (child trained on parent's merged model)."""
    import torch
    from safetensors.torch import load_file, save_file

    pc, cc = (json.loads((d / CONFIG).read_text(encoding="utf-8")) for d in (parent, child))
    if any(c.get("r") is None or c.get("rank_pattern") or c.get("alpha_pattern") for c in (pc, cc)):
        raise ValueError(f"compose: {parent} / {child}: only uniform-rank LoRA adapters can be composed")
    pw, cw = load_file(str(parent / WEIGHTS)), load_file(str(child / WEIGHTS))
    sp, sc = math.sqrt(_scaling(pc)), math.sqrt(_scaling(cc))
    rp, rc = int(pc["r"]), int(cc["r"])
    rank = rp + rc
    weights: dict[str, torch.Tensor] = {}
    for key in sorted(set(pw) | set(cw)):
        if ".lora_A." in key or ".lora_B." in key:
            continue
        weights[key] = (cw[key] if key in cw else pw[key]).contiguous()  # modules_to_save: the later run's copy
    modules = sorted({k.split(".lora_A.")[0] for k in (set(pw) | set(cw)) if ".lora_A." in k})
    for m in modules:
        a_key, b_key = f"{m}.lora_A.weight", f"{m}.lora_B.weight"
        a_parts, b_parts = [], []
        for w, s, r in ((pw, sp, rp), (cw, sc, rc)):
            if a_key in w:
                a_parts.append(w[a_key].float() * s)
                b_parts.append(w[b_key].float() * s)
            else:  # a module only one adapter adapts: zeros keep the concatenated rank uniform
                ref_a, ref_b = (pw if a_key in pw else cw)[a_key], (pw if a_key in pw else cw)[b_key]
                a_parts.append(torch.zeros(r, ref_a.shape[1]))
                b_parts.append(torch.zeros(ref_b.shape[0], r))
        dtype = (cw if a_key in cw else pw)[a_key].dtype
        weights[a_key] = torch.cat(a_parts, dim=0).to(dtype).contiguous()
        weights[b_key] = torch.cat(b_parts, dim=1).to(dtype).contiguous()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
    cfg = {**cc, "r": rank, "lora_alpha": rank, "use_rslora": False,
           "base_model_name_or_path": pc.get("base_model_name_or_path"),
           "target_modules": sorted(set(pc.get("target_modules") or []) | set(cc.get("target_modules") or []))}
    _write_config(tmp, cfg)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {"rank": rank, "modules": len(modules)}


def finalize(model_dir: Path, base: str | None, parent: Path | None = None, root: Path | None = None) -> None:
    """After a training run: make `<model_dir>/adapter` base-relative and portable.

    `parent`: the adapter folder of the model this run started from (DPO from the SFT model); the run's own adapter
    is then kept as `adapter_delta/` and `adapter/` becomes the composition, applying to `base` (None: the parent's
    base)."""
    adapter = Path(model_dir) / "adapter"
    if not (adapter / CONFIG).is_file():
        return
    # the Trainer pickles its arguments beside the adapter: absolute output paths, nothing inference needs
    (adapter / "training_args.bin").unlink(missing_ok=True)
    if parent is not None:
        delta = Path(model_dir) / "adapter_delta"
        shutil.rmtree(delta, ignore_errors=True)
        adapter.rename(delta)
        make_portable(delta, str(Path(parent).parent), root)
        info = compose(Path(parent), delta, adapter)
        log.info("%s: composed %s + %s into one adapter on the base (rank %d, %d modules)", model_dir, parent, delta,
                 info["rank"], info["modules"])
    if base is not None:
        make_portable(adapter, base, root)
