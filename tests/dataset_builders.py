"""Hand-built threads and annotations in the crawl/annotate contract formats (invented text, no real data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.common.io import write_jsonl
from tasks.domain.taxonomy import N_VALUES, VALUE_INDEX


def values(*named: str, high: float = 0.9, low: float = 0.01) -> list[float]:
    """20 probabilities: `named` categories high (descending in the given order), the rest low."""
    v = [low] * N_VALUES
    for rank, name in enumerate(named):
        v[VALUE_INDEX[name]] = high - 0.05 * rank
    return v


def utt(tid: str, rid: str, parent: str | None, author: str, text: str, role: str | None = None, depth: int = 0
        ) -> dict[str, Any]:
    return {"id": f"{tid}-{rid}", "reddit_id": rid, "parent_id": parent, "author": author,
            "role": role or ("op" if author == "op" else "commenter"), "text": text, "created_utc": None, "depth": depth}


def thread(tid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One thread exercising every path rule, and its annotations.

    P (post) ─ a1 (A) ─ o2 (op, positive) ─ a2 (A) ─ o3 (op, flat: not positive)
             │                           └ c1 (C) ─ oc (op: chain has two commenters → not on path)
             ├ b1 (B) ─ ob (op, positive)
             ├ op1 (op replying to its own post → not on path)
             ├ d1 (D, values disjoint from o2's targets) · e1 (E, shares Achievement) · r1 ([removed])
             └ orphan op reply to a missing comment → unreachable
    """
    u = [
        utt(tid, "t3_p", None, "op", f"Post of {tid}: I lost my job and feel useless."),
        utt(tid, "t1_a1", "t3_p", "A", "That is hard. What did you enjoy about the work?", depth=1),
        utt(tid, "t1_o2", "t1_a1", "op", "Thanks, I liked building things and I want to try again.", depth=2),
        utt(tid, "t1_a2", "t1_o2", "A", "You clearly have drive. Small steps!", depth=3),
        utt(tid, "t1_o3", "t1_a2", "op", "Maybe.", depth=4),
        utt(tid, "t1_c1", "t1_o2", "C", "Same happened to me last year.", depth=3),
        utt(tid, "t1_oc", "t1_c1", "op", "Really? That gives me hope.", depth=4),
        utt(tid, "t1_b1", "t3_p", "B", "Sending hugs, you are not useless.", depth=1),
        utt(tid, "t1_ob", "t1_b1", "op", "This made me smile, thank you so much.", depth=2),
        utt(tid, "t1_op1", "t3_p", "op", "Edit: thanks everyone.", depth=1),
        utt(tid, "t1_d1", "t3_p", "D", "Keep your house tidy and your savings safe.", depth=1),
        utt(tid, "t1_e1", "t3_p", "E", "Go for the promotion next time.", depth=1),
        utt(tid, "t1_r1", "t3_p", "F", "[removed]", depth=1),
        utt(tid, "t1_orph", "t1_gone", "op", "Replying to a deleted comment.", depth=2),
    ]
    ann_spec = {
        "t3_p": (0.1, values("Security: personal", "Achievement", "Face")),
        "t1_a1": (0.4, values("Benevolence: caring")),
        "t1_o2": (0.8, values("Achievement", "Self-direction: action", "Stimulation")),
        "t1_a2": (0.6, values("Achievement")),
        "t1_o3": (0.3, values("Humility")),
        "t1_c1": (0.5, values("Benevolence: caring")),
        "t1_oc": (0.9, values("Hedonism")),
        "t1_b1": (0.7, values("Benevolence: caring")),
        "t1_ob": (0.9, values("Hedonism", "Benevolence: caring", "Universalism: concern")),
        "t1_op1": (0.9, values("Benevolence: caring")),
        "t1_d1": (0.5, values("Security: personal", "Power: resources")),
        "t1_e1": (0.5, values("Achievement", "Power: resources")),
        "t1_r1": (0.5, values()),
        "t1_orph": (0.9, values("Achievement")),
    }
    ann = [{"id": f"{tid}-{rid}", "thread_id": tid, "values": v, "emotions": [0.0] * 28, "positivity": p,
            "neg_intensity": 1 - p} for rid, (p, v) in ann_spec.items()]
    th = {"thread_id": tid, "subreddit": "offmychest", "submission_id": "t3_p", "created_utc": None,
          "title": f"title {tid}", "source": "table", "utterances": u}
    return th, ann


def write_store(root: Path, n_threads: int = 8, per_shard: int = 3) -> tuple[Path, Path]:
    """data/threads and data/annotated under `root` with n hand-built threads in shards; returns both folders."""
    threads_dir, ann_dir = root / "threads", root / "annotated"
    built = [thread(f"th{i:02d}") for i in range(n_threads)]
    for s in range(0, n_threads, per_shard):
        chunk = built[s:s + per_shard]
        name = f"shard{s:03d}.jsonl"
        write_jsonl(threads_dir / "shards" / name, [t for t, _ in chunk])
        write_jsonl(ann_dir / "shards" / name, [a for _, anns in chunk for a in anns])
    return threads_dir, ann_dir


def save_tiny_tokenizer(out: Path) -> Path:
    """A byte-level BPE + ChatML template saved like models/tokenizer (what tasks/base_model.py writes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t["text"] for i in range(4) for t in thread(f"x{i}")[0]["utterances"]] * 5
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<unk>", "<s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>",
                                  unk_token="<unk>")
    # ChatML with {% generation %} markers, as tasks/base_model.py writes it (TRL's assistant_only_loss needs them).
    tpl = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
           "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
           "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    tok.chat_template = tpl
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    (out / "chat_template.jinja").write_text(tpl, encoding="utf-8")
    return out


def write_rule(folder: Path, threshold: float = 0.5, min_chars: int = 2, **cuts: float) -> Path:
    """A value-detector folder holding only presence.json (one cut, `cuts` overriding categories by index name)."""
    from tasks.annotators.presence import PresenceRule
    from tasks.domain.taxonomy import VALUE_CATEGORIES

    th = [cuts.get(c, threshold) for c in VALUE_CATEGORIES]
    folder.mkdir(parents=True, exist_ok=True)
    PresenceRule(tuple(th), min_chars).save(folder)
    return folder
