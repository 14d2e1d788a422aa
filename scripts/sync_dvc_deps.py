"""Rewrite the code deps of every dvc.yaml stage from the import graph (the stage's flow and what it imports).

`python scripts/sync_dvc_deps.py` after moving code; `tests/unit/test_dvc_stages.py` fails until the deps match.
Data/model deps are kept as written; comments outside the deps lists are untouched.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.test_dvc_stages import SPEC, _code_closure  # noqa: E402


def main() -> None:
    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    for stage in SPEC:
        code = sorted(_code_closure(stage), key=lambda p: (not p.startswith("flows/"), p))
        other = [d for d in SPEC[stage].get("deps", []) if not (isinstance(d, str) and d.startswith(("tasks/", "flows/")))]
        extra = [d for d in SPEC[stage].get("deps", []) if isinstance(d, str) and d.endswith(".yaml") and d.startswith("tasks/")]
        deps = code + extra + [d for d in other if isinstance(d, str)]
        block = "    deps:\n" + "".join(f"      - {d}\n" for d in deps)
        pat = re.compile(rf"(  {stage}:\n    cmd: [^\n]*\n)    deps:\n(?:      - [^\n]*\n)+")
        text, n = pat.subn(lambda m, b=block: m.group(1) + b, text)
        if n != 1:
            raise SystemExit(f"stage {stage}: deps block not found")
    (ROOT / "dvc.yaml").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
