"""Training rows of the supporter, shared by its SFT and DPO stages: states of simulated dialogues, SFT targets with
a chosen adoption rate, and left-truncation so that no answer is ever cut.

TRL truncates from the *end* (SFTConfig/DPOConfig `truncation_mode="keep_start"`) and silently drops rows whose
prompt fills `max_length`, which would cut or lose the very responses a row exists for. So every row is fitted here
first: the oldest turns of the history are dropped (then, if one turn alone is too long, its beginning is cut) until
the whole conversation, answer included, fits; after TRL has tokenised the dataset, `check_sft_dataset` /
`check_dpo_dataset` prove that every row survived with its full answer(s).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.common.hashing import content_id
from tasks.domain import prompts
from tasks.domain.supporter_format import answer_variant, supporter_messages

log = logging.getLogger(__name__)

History = list[tuple[str, str]]
#: Keep at least this many tokens of a single over-long history turn before giving up on a row.
MIN_TURN_TOKENS = 8


class ExampleError(ValueError):
    """A simulated record or a row that cannot become a training example; the message says which and why."""


def effective(trainer_args: dict[str, Any], stage_args: dict[str, Any], key: str) -> Any:
    """A TRL setting as the run sees it: the stage's `args` over `train.trainer` (trl_args.build's layering)."""
    return {**trainer_args, **stage_args}[key]


# ------------------------------------------------------------------------------------------ states of dialogues
def history_before(record: dict[str, Any], turn: int) -> History:
    """The conversation the supporter saw before its `turn`-th reply (1-based): seeker, supporter, ..., seeker."""
    msgs = record["messages"]
    hist = prompts.history_from_messages(msgs[: 2 * turn])  # system, then seeker/supporter alternating
    if not hist or hist[-1][0] != "seeker" or len(hist) != 2 * turn - 1:
        raise ExampleError(f"dialogue {record.get('id')}: messages do not hold turn {turn} (expected "
                           f"{2 * turn - 1} seeker/supporter messages before it, ending on the seeker)")
    return hist


def turn_states(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One state per supporter turn of a simulated record: what the supporter saw and what the teacher did."""
    out = []
    for t in record["turns"]:
        k = int(t["turn"])
        out.append({"dialogue_id": record["id"], "persona_id": record["persona_id"], "turn": k,
                    "history": history_before(record, k), "target_values": list(t["target_values"]),
                    "reference": t["reference"], "seeker_intensity_before": t.get("seeker_intensity_before"),
                    "teacher": t})
    return out


# ------------------------------------------------------------------------------------------ SFT targets
def choose_adoption(keys: Sequence[str], rate: float | None, teacher: Sequence[str], seed: int) -> list[str]:
    """'Yes'/'No' per turn: with `rate`, exactly floor(rate x n + 1/2) turns (the first in a seeded hash order)
    take the Yes version; with None, the teacher's own choice."""
    if rate is None:
        return list(teacher)
    order = sorted(range(len(keys)), key=lambda i: content_id([seed, "adopt", keys[i]]))
    yes = set(order[: math.floor(rate * len(keys) + 0.5)])  # half up, not Python's half-to-even: 0.5 x 1 -> 1
    return ["Yes" if i in yes else "No" for i in range(len(keys))]


def sft_examples(records: Sequence[dict[str, Any]], adoption_rate: float | None, seed: int) -> list[dict[str, Any]]:
    """One example per supporter turn: prompt parts + the answer (4 reasoning steps + response) of the chosen
    adoption; the alternative responses supply the choice the teacher did not make."""
    states = [s for r in sorted(records, key=lambda r: r["id"]) for s in turn_states(r)]
    keys = [f"{s['dialogue_id']}/{s['turn']}" for s in states]
    adopt = choose_adoption(keys, adoption_rate, [s["teacher"]["adopt_reference"] for s in states], seed)
    out = []
    for key, s, a in zip(keys, states, adopt, strict=True):
        answer, alt = answer_variant(s["teacher"], a)
        out.append({"id": content_id(["supporter-sft", key, answer]), "dialogue_id": s["dialogue_id"],
                    "turn": s["turn"], "history": s["history"], "target_values": s["target_values"],
                    "reference": s["reference"], "adopt": a, "alternative": alt,
                    "teacher_adopt": s["teacher"]["adopt_reference"], "answer": answer})
    return out


# ------------------------------------------------------------------------------------------ fitting to max_length
def _n_tokens(tok: Any, messages: list[dict[str, str]]) -> int:
    return len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def _cut_left(tok: Any, text: str, keep_tokens: int) -> str:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return tok.decode(ids[-keep_tokens:], skip_special_tokens=True).lstrip() if keep_tokens > 0 else ""


@dataclass
class Fit:
    """A prompt fitted to the token budget, and what it cost."""

    prompt: list[dict[str, str]]
    dropped_turns: int = 0
    cut_tokens: int = 0


def fit_prompt(tok: Any, max_length: int, history: History, target_values: Sequence[str], reference: str,
               answers: Sequence[str], build: Callable[..., list[dict[str, str]]] = supporter_messages) -> Fit | None:
    """Drop the oldest exchanges (a seeker turn and the supporter's reply, so the history still opens with the
    seeker; the last seeker turn always stays), then cut that turn's beginning, until the prompt followed by each of
    `answers` fits `max_length` tokens. None when even one short seeker turn does not fit."""
    hist = list(history)

    def longest(h: History) -> int:
        p = build(h, target_values, reference)
        return max(_n_tokens(tok, [*p, prompts.assistant(a)]) for a in answers)

    dropped = 0
    while longest(hist) > max_length and len(hist) > 1:
        step = 2 if len(hist) > 2 and hist[1][0] != hist[0][0] else 1
        hist = hist[step:]
        dropped += step
    over = longest(hist) - max_length
    cut = 0
    if over > 0:  # one turn is longer than the budget: keep its end (what the supporter answers)
        role, text = hist[0]
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        keep = n - over - 2  # a couple of tokens of slack: re-tokenising a cut text can merge differently
        if keep < MIN_TURN_TOKENS:
            return None
        hist = [(role, _cut_left(tok, text, keep))]
        cut = n - keep
        if longest(hist) > max_length:
            return None
    return Fit(build(hist, target_values, reference), dropped, cut)


@dataclass
class FitReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    truncated: int = 0  # rows whose history lost turns or characters
    dropped: int = 0  # rows that cannot fit at all (their answer alone is too long)

    def metrics(self, prefix: str) -> dict[str, float]:
        n = len(self.rows) + self.dropped
        return {f"{prefix}.rows": float(len(self.rows)), f"{prefix}.truncated": float(self.truncated),
                f"{prefix}.dropped_too_long": float(self.dropped),
                f"{prefix}.truncated_share": self.truncated / n if n else 0.0}


def sft_rows(examples: Sequence[dict[str, Any]], tok: Any, max_length: int) -> FitReport:
    """SFT rows `{"id", "messages", "n_answer_tokens", ...}` fitted to `max_length`."""
    rep = FitReport()
    for e in examples:
        fit = fit_prompt(tok, max_length, e["history"], e["target_values"], e["reference"], [e["answer"]])
        if fit is None:
            rep.dropped += 1
            continue
        rep.truncated += bool(fit.dropped_turns or fit.cut_tokens)
        msgs = [*fit.prompt, prompts.assistant(e["answer"])]
        mask = tok.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                       return_assistant_tokens_mask=True)["assistant_masks"]
        rep.rows.append({"id": e["id"], "messages": msgs, "n_answer_tokens": int(sum(mask)),
                         "dialogue_id": e["dialogue_id"], "adopt": e["adopt"]})
    return rep


def dpo_rows(pairs: Sequence[dict[str, Any]], tok: Any, max_length: int) -> FitReport:
    """DPO rows `{"id", "prompt", "chosen", "rejected"}` (conversational) fitted so both answers fit whole."""
    rep = FitReport()
    for p in pairs:
        fit = fit_prompt(tok, max_length, [tuple(x) for x in p["history"]], p["target_values"], p["reference"],
                         [p["chosen"], p["rejected"]])
        if fit is None:
            rep.dropped += 1
            continue
        rep.truncated += bool(fit.dropped_turns or fit.cut_tokens)
        rep.rows.append({"id": p["id"], "prompt": fit.prompt, "chosen": [prompts.assistant(p["chosen"])],
                         "rejected": [prompts.assistant(p["rejected"])]})
    return rep


# ------------------------------------------------------------------------------------------ checks on TRL's data
def check_sft_dataset(dataset: Any, rows: Sequence[dict[str, Any]], max_length: int, where: str) -> None:
    """Every row survived TRL's preparation with all of its answer tokens in the loss and within max_length."""
    if len(dataset) != len(rows):
        raise ExampleError(f"{where}: TRL kept {len(dataset)} of {len(rows)} SFT rows (it drops rows whose answer "
                           "was truncated away); the rows were fitted to max_length, so this is a bug")
    for i, (d, r) in enumerate(zip(dataset, rows, strict=True)):
        n = sum(1 for x in d["labels"] if x != -100)
        if len(d["input_ids"]) > max_length or n != r["n_answer_tokens"]:
            raise ExampleError(f"{where}: row {i} ({r['id']}): {n} of its {r['n_answer_tokens']} answer tokens are "
                               f"trained on ({len(d['input_ids'])} tokens, max_length {max_length})")


def check_dpo_dataset(dataset: Any, rows: Sequence[dict[str, Any]], max_length: int, where: str) -> None:
    """Every pair survived TRL's tokenisation and its collator's end-truncation keeps both responses whole."""
    if len(dataset) != len(rows):
        raise ExampleError(f"{where}: TRL kept {len(dataset)} of {len(rows)} pairs (it drops pairs whose prompt "
                           "fills max_length); the rows were fitted to max_length, so this is a bug")
    for i, (d, r) in enumerate(zip(dataset, rows, strict=True)):
        for side in ("chosen", "rejected"):
            total = len(d["prompt_ids"]) + len(d[f"{side}_ids"])
            if not d[f"{side}_ids"] or total > max_length:
                raise ExampleError(f"{where}: pair {i} ({r['id']}): prompt + {side} = {total} tokens > max_length "
                                   f"{max_length}: the collator would cut the {side} response")
