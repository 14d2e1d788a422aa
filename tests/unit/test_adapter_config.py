"""A saved adapter config is byte-stable: PEFT writes `target_modules` (a set) in hash order, which would change the
model folder's hash between runs with equal weights and make DVC re-run everything downstream."""

from __future__ import annotations

import json

from tasks.train.trainers import canonical_adapter_config


def test_adapter_config_is_canonical_whatever_the_set_order(tmp_path):
    outs = []
    for order in (["q_proj", "v_proj", "down_proj"], ["down_proj", "q_proj", "v_proj"]):
        f = tmp_path / f"{len(outs)}.json"
        f.write_text(json.dumps({"target_modules": order, "r": 16, "peft_type": "LORA", "layers_to_transform": [3, 1]}))
        canonical_adapter_config(f)
        outs.append(f.read_bytes())
    assert outs[0] == outs[1]
    cfg = json.loads(outs[0])
    assert cfg["target_modules"] == ["down_proj", "q_proj", "v_proj"] and cfg["layers_to_transform"] == [3, 1]
    canonical_adapter_config(tmp_path / "missing.json")  # no adapter (full fine-tuning): nothing to do
