"""vLLM serving smoke (part of `make gpu-smoke`): the base + LoRA adapters through `esvr serve --engine vllm`
(the same command the pipeline uses, start-up check included), then N concurrent chat requests per served model;
prints one JSON line with completion tokens/s per model and overall. Needs a GPU and vLLM on PATH.

  ESVR_SMOKE_BASE=/path/or/hub-id   the base (default: serving.base of the paper profile)
  ESVR_SMOKE_ADAPTERS=tvd=/p,rg=/p  adapter folders trained on that base (default: the profile's registry champions)
  ESVR_SMOKE_REQUESTS=64            requests per model;  OUT=/dir: the report also goes to $OUT/serve_smoke.json
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tasks.common.config import load_profile
from tasks.llm import vllm
from tasks.llm.client import wait_healthy


async def _load(url: str, model: str, n: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=300)
    msgs: Any = [{"role": "user", "content": "I failed my exam again and I feel like giving up. What should I do?"}]
    t0 = time.perf_counter()
    res = await asyncio.gather(*(client.chat.completions.create(model=model, messages=msgs, max_tokens=128,
                                                               temperature=0.7, seed=i) for i in range(n)))
    secs = time.perf_counter() - t0
    toks = sum(r.usage.completion_tokens if r.usage else 0 for r in res)
    await client.close()
    return {"requests": n, "seconds": round(secs, 2), "completion_tokens": toks, "tokens_per_second": round(toks / secs, 1)}


def main() -> None:
    s = load_profile("paper").serving
    if os.environ.get("ESVR_SMOKE_BASE"):
        s = s.model_copy(update={"base": os.environ["ESVR_SMOKE_BASE"]})
    adapters = ({k: Path(v) for k, v in (x.split("=", 1) for x in os.environ["ESVR_SMOKE_ADAPTERS"].split(","))}
                if os.environ.get("ESVR_SMOKE_ADAPTERS") else vllm.resolve_adapters(s))
    n = int(os.environ.get("ESVR_SMOKE_REQUESTS", "64"))
    proc = subprocess.Popen(vllm.vllm_command(s.model_copy(update={"host": "127.0.0.1"}), adapters))
    url = f"http://127.0.0.1:{s.port}"
    report: dict = {"base": s.base, "adapters": sorted(adapters), "settings": {
        "max_loras": s.max_loras, "max_lora_rank": s.max_lora_rank, "max_model_len": s.max_model_len,
        "gpu_memory_utilization": s.gpu_memory_utilization}}
    try:
        t0 = time.perf_counter()
        wait_healthy(f"{url}/health", s.startup_timeout_s * 5, proc)
        report["startup_seconds"] = round(time.perf_counter() - t0, 1)
        for m in [vllm.BASE_NAME, *adapters]:
            vllm.check_structured_output(f"{url}/v1", m)
        report["structured_output_check"] = "passed"
        report["models"] = {m: asyncio.run(_load(f"{url}/v1", m, n)) for m in [vllm.BASE_NAME, *adapters]}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    sys.stdout.write(json.dumps(report) + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "serve_smoke.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
