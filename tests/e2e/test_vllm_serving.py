"""`esvr serve --engine vllm`: the command line vLLM gets (base + registry-champion LoRA adapters, LoRA limits from
params) and the start-up check, against a fake `vllm` (tests/fakes/fake_vllm.py) that obeys or ignores
response_format. vLLM itself needs the GPU worker."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tasks.common import paths
from tasks.common.config import load_profile
from tasks.llm import vllm
from tasks.llm.client import free_port

FAKE = paths.ROOT / "tests" / "fakes" / "fake_vllm.py"


def _adapter(folder: Path, base: str, r: int = 16) -> Path:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": r}))
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer.json").write_text("{}")
    return folder


def _register(tmp_path: Path, name: str, base: str, r: int = 16) -> None:
    import mlflow

    from tasks.common import registry

    with mlflow.start_run():
        registry.register(_adapter(tmp_path / name, base, r), name, ["champion"], files="adapter")


@pytest.fixture
def serving(mlflow_store, tmp_path):
    """The paper profile's serving group over a temporary registry holding tvd and reference-generator."""
    s = load_profile("paper").serving
    _register(tmp_path, "tvd", s.base)
    _register(tmp_path, "reference-generator", s.base, r=32)  # a composed SFT+DPO adapter
    return s.model_copy(update={"port": free_port(), "startup_timeout_s": 60.0})


def test_command_serves_the_champions_with_lora_limits_from_params(serving):
    adapters = vllm.resolve_adapters(serving)  # the supporter is not registered yet: skipped, not fatal
    assert sorted(adapters) == ["rg", "tvd"]
    assert all((p / "adapter_config.json").is_file() for p in adapters.values())
    cmd = vllm.vllm_command(serving, adapters)
    assert cmd[:3] == ["vllm", "serve", "meta-llama/Meta-Llama-3-8B-Instruct"]
    flag = {k: cmd[cmd.index(k) + 1] for k in ("--max-loras", "--max-lora-rank", "--port", "--max-model-len",
                                               "--served-model-name")}
    assert flag == {"--max-loras": str(serving.max_loras), "--max-lora-rank": "32", "--port": str(serving.port),
                    "--max-model-len": "4096", "--served-model-name": "base"}
    assert "--enable-lora" in cmd
    mods = cmd[cmd.index("--lora-modules") + 1:]
    assert mods == [f"rg={adapters['rg']}", f"tvd={adapters['tvd']}"]


def test_adapter_of_another_base_or_too_high_rank_fails_loudly(serving, tmp_path):
    _register(tmp_path / "x", "supporter", "/somewhere/models/rg_sft")  # a DPO delta: trained on the SFT model
    with pytest.raises(vllm.ServingError, match="trained on '/somewhere/models/rg_sft'"):
        vllm.resolve_adapters(serving)
    with pytest.raises(vllm.ServingError, match="max_lora_rank"):
        vllm.resolve_adapters(serving.model_copy(update={"max_lora_rank": 16, "adapters": {"rg": serving.adapters["rg"]}}))


@pytest.fixture
def fake_vllm_on_path(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "vllm"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_ARGV", str(tmp_path / "argv.json"))
    return tmp_path / "argv.json"


def test_startup_check_fails_loudly_when_the_constraint_is_ignored(serving, fake_vllm_on_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "ignore")
    with pytest.raises(vllm.ServingError, match="ignored response_format json_schema"):
        vllm.serve(serving)
    assert json.loads(fake_vllm_on_path.read_text())[:2] == ["serve", serving.base]


def test_startup_check_passes_when_the_constraint_is_applied(serving, fake_vllm_on_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "obey")
    monkeypatch.setenv("FAKE_VLLM_EXIT_AFTER", "3")  # base, rg, tvd probed; then the fake stops by itself
    assert vllm.serve(serving) == 0
    argv = json.loads(fake_vllm_on_path.read_text())
    assert "--enable-lora" in argv and argv[argv.index("--max-lora-rank") + 1] == "32"


def test_remote_roles_get_the_registry_fingerprint(serving, tmp_path):
    from tasks.llm.client import role_from_params

    llm = load_profile("paper").llm
    role = role_from_params("tvd", llm.roles["tvd"], None, {}, served=serving.adapters)
    assert role.fingerprint == "tvd/1"
    hosted = role_from_params("judge", llm.roles["judge"].model_copy(update={"api_key_env": None}), None, {},
                              served=serving.adapters)
    assert hosted.fingerprint == ""
    _register(tmp_path / "retrained", "tvd", serving.base)  # version 2 takes the champion alias
    assert role_from_params("tvd", llm.roles["tvd"], None, {}, served=serving.adapters).fingerprint == "tvd/2"
