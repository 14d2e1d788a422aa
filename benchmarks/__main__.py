"""Run every benchmark module that defines `main()` and collect their JSON summaries in benchmarks/results.json."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import sys
import time
from pathlib import Path

import benchmarks

log = logging.getLogger("benchmarks")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = argv or sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))
    results = {}
    for name in names:
        mod = importlib.import_module(f"benchmarks.{name}")
        if not hasattr(mod, "main"):
            continue
        t0 = time.perf_counter()
        log.info("running %s", name)
        results[name] = mod.main()
        log.info("%s done in %.1fs: %s", name, time.perf_counter() - t0, json.dumps(results[name]))
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
