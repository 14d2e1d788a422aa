"""What the supporter's answers say about it (pure: texts in, numbers out): well-formedness, adoption of the
reference, strategies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tasks.domain.sim_prompts import STRATEGIES
from tasks.domain.supporter_format import parse


def answer_stats(texts: Sequence[str], prefix: str) -> dict[str, float]:
    """Share of well-formed answers, adoption rate among them (the student's 'Yes' share), strategies named."""
    parsed = [parse(t) for t in texts]
    ok = [p for p in parsed if p is not None]
    n = len(texts)
    out = {f"{prefix}.answers": float(n), f"{prefix}.well_formed_share": len(ok) / n if n else 0.0,
           f"{prefix}.adoption_rate": sum(p["adopt_reference"] == "Yes" for p in ok) / len(ok) if ok else 0.0,
           f"{prefix}.known_strategy_share": sum(p["strategy"] in STRATEGIES for p in ok) / len(ok) if ok else 0.0}
    counts = Counter(p["strategy"] for p in ok if p["strategy"] in STRATEGIES)
    out.update({f"{prefix}.strategy.{s.replace(' ', '_')}": counts[s] / len(ok) for s in STRATEGIES if ok})
    return out

