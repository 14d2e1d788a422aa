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


def build_tiny_base(models: Path, hidden: int = 32, max_positions: int = 1024) -> Path:
    """models/tokenizer and models/base as the base_model stage writes them (BPE on the fixture texts, ChatML with
    generation markers, a 2-layer Llama from a config)."""
    from tasks import base_model
    from tasks.domain import chat_template
    from tasks.domain.supporter_format import INPUT_LABELS, format_answer
    from tests.params import group

    texts = [*SEEKER_LINES, SUPPORTER_SYSTEM, *INPUT_LABELS.values(), *VALUE_CATEGORIES, *STRATEGIES]
    for i in range(6):
        for t in dialogue(i)["turns"]:
            texts += [format_answer(**t), t["alt_response_with_reference"], t["alt_response_without_reference"]]
    tok = base_model.train_tokenizer(texts * 3, 600, 2, chat_template.template("chatml"))
    chat_template.save_tokenizer(tok, models / "tokenizer")
    arch = group("base_model.tiny", hidden_size=hidden, intermediate_size=2 * hidden,
                 max_position_embeddings=max_positions)
    base_model.build_tiny_llama(tok, arch, 1).save_pretrained(str(models / "base"))
    chat_template.save_tokenizer(tok, models / "base")
    return models


#: Everything shrunk to seconds on a 32-wide model (merged over profiles/tiny.yaml).
MICRO = {
    "train": {"trainer": {"max_length": 1024, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
                          "save_steps": 1000, "logging_steps": 1},
              "run": {"torch_threads": 1},
              "supporter_sft": {"args": {"max_steps": 6, "learning_rate": 1.0e-2, "max_length": 1024}},
              "supporter_eval": {"limit": 2, "max_new_tokens": 8, "batch_size": 2},
              "supporter_dpo": {"args": {"max_steps": 4, "learning_rate": 1.0e-2, "max_length": 1024}},
              "supporter_emotion_dpo": {"args": {"max_steps": 4, "learning_rate": 1.0e-2, "max_length": 1024}}},
}


def micro_params(extra: dict | None = None):  # noqa: ANN201 - tasks.common.config.Params
    from tasks.common.config import _deep_merge, resolve_profile, validate

    data, files = resolve_profile("tiny")
    return validate(_deep_merge(_deep_merge(data, MICRO), extra or {}), files)


def write_pairs(root: Path, kind: str, records: list[dict]) -> Path:
    """data/pairs/<kind>/{train,validation}.jsonl in mine_pairs' format: per state, its Yes version over its No."""
    from tasks.domain.supporter_format import answer_variant
    from tasks.supporter.examples import turn_states

    rows = []
    for r in records:
        for s in turn_states(r):
            yes, no = answer_variant(s["teacher"], "Yes")[0], answer_variant(s["teacher"], "No")[0]
            rows.append({"id": content_id([kind, r["id"], s["turn"]]), "kind": kind, "dialogue_id": r["id"],
                         "state_id": content_id([r["id"], s["turn"]]), "turn": s["turn"], "delta": 1.0,
                         "history": s["history"], "target_values": s["target_values"], "reference": s["reference"],
                         "chosen": yes, "rejected": no})
    d = root / kind
    cut = max(1, len(rows) // 4)
    write_jsonl(d / "train.jsonl", rows[cut:])
    write_jsonl(d / "validation.jsonl", rows[:cut])
    return root


def build_annotators(root: Path, mirror: Path) -> tuple[Path, Path]:
    """Untrained annotators (MiniLM + fresh heads) in the real folder format: the scoring path, not its quality."""
    import numpy as np

    from tasks.annotators import classifier as A

    names = A.read_emotion_names(mirror / "goemotions" / "emotions.txt")
    vm = A.MeanPoolClassifier.from_base("minilm", list(VALUE_CATEGORIES), 64)
    vm.save(root / "values", np.full(20, 0.5))
    em = A.MeanPoolClassifier.from_base("minilm", names, 64)
    em.save(root / "emotion", np.full(28, 0.5))
    (root / "emotion" / "sentiment_dict.json").write_text((mirror / "goemotions" / "sentiment_dict.json").read_text())
    return root / "values", root / "emotion"


def rollout_params_file(tmp: Path, url: str, values: Path, emotion: Path, **rollouts) -> Path:
    """A params file whose every LLM role (the supporter included) talks to the mock at `url`."""
    import yaml

    from tasks.common.config import resolve_profile

    data, _ = resolve_profile("tiny")
    data["llm"]["local_models"] = {}
    for role in data["llm"]["roles"].values():
        role.update(base_url=url, model="mock")
    data["llm"].update(cache_dir=str(tmp / "llm-cache"), max_concurrency=4, timeout_s=5.0)
    r = data["supporter"]["rollouts"]
    r.update(max_states=6, candidates=3, continuations=2, horizon=2, shard_size=2, constrain_format=False)
    r["supporter"].update(base_url=url, model="mock")
    r.update(rollouts)
    data["annotate"].update(value_model=str(values), emotion_model=str(emotion), batch_size=16, max_length=32)
    p = tmp / "params.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p
