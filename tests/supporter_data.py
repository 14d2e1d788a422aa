"""Hand-made stand-ins for the supporter's inputs, in the exact docs/CONTRACTS.md shapes: simulated dialogues
(with issue 12's per-turn `seeker_reply` and `target_values`) and their personas."""

from __future__ import annotations

from pathlib import Path

from tasks.common.hashing import content_id
from tasks.common.io import write_jsonl
from tasks.domain.sim_prompts import STRATEGIES, SUPPORTER_SYSTEM
from tasks.domain.taxonomy import VALUE_CATEGORIES

SEEKER_LINES = ["I lost my job last week and I feel useless.", "My family depends on me and I am scared.",
                "I used to love building things with my hands.", "Maybe I could try freelancing again.",
                "Thank you, I feel a little calmer now.", "I want my kids to see me try."]


def persona(i: int) -> dict:
    return {"id": f"persona-{i:02d}", "problem_type": "job crisis", "emotion_type": "anxiety",
            "initial_intensity": 4, "context": f"You are person {i}, recently laid off."}


def dialogue(i: int, n_turns: int = 3, teacher_yes_every: int = 3) -> dict:
    """A simulated record: seeker opens, n_turns supporter turns, each followed by a seeker reply."""
    p = persona(i)
    did = content_id(["dialogue", i])
    seeker = [SEEKER_LINES[(i + k) % len(SEEKER_LINES)] + f" ({i}.{k})" for k in range(n_turns + 1)]
    msgs = [{"role": "system", "content": SUPPORTER_SYSTEM}, {"role": "user", "content": seeker[0]}]
    turns = []
    for k in range(1, n_turns + 1):
        vals = [VALUE_CATEGORIES[(i + k + j * 5) % 20] for j in range(3)]
        adopt = "Yes" if (i + k) % teacher_yes_every == 0 else "No"
        t = {"turn": k, "target_values": vals, "reference": f"You clearly care about {vals[0].lower()}.",
             "seeker_intensity_before": 4 - min(k - 1, 2), "issue_and_state": f"job loss, anxious ({i}.{k})",
             "reference_key_content": f"{vals[0]} matters", "adopt_reference": adopt,
             "adopt_reason": "it fits" if adopt == "Yes" else "too early",
             "strategy": STRATEGIES[(i + k) % len(STRATEGIES)], "response": f"That sounds hard; what helps? ({i}.{k})",
             "alt_response_with_reference": f"You care about {vals[0].lower()}, and it shows. ({i}.{k})",
             "alt_response_without_reference": f"Tell me more about your week. ({i}.{k})",
             "seeker_reply": {"utterance": seeker[k], "emotion_intensity": 4 - min(k, 2), "end": k == n_turns}}
        turns.append(t)
        msgs.append({"role": "assistant", "content": t["response"]})
        if k < n_turns:
            msgs.append({"role": "user", "content": seeker[k]})
    meta = {"persona_id": p["id"], "adoption": [t["adopt_reference"] for t in turns]}
    return {"id": did, "persona_id": p["id"], "messages": msgs, "turns": turns, "meta": meta}


def write_simulated(root: Path, n_train: int = 4, n_val: int = 1, n_turns: int = 3) -> tuple[Path, Path]:
    """data/simulated/{train,validation}.jsonl and data/personas/train.jsonl under root."""
    sim = root / "simulated"
    write_jsonl(sim / "train.jsonl", [dialogue(i, n_turns) for i in range(n_train)])
    write_jsonl(sim / "validation.jsonl", [dialogue(i, n_turns) for i in range(n_train, n_train + n_val)])
    personas = root / "personas" / "train.jsonl"
    write_jsonl(personas, [persona(i) for i in range(n_train + n_val)])
    return sim, personas
