"""SFT targets of the supporter (adoption rate, alternative responses) and the left-truncation that keeps every
answer whole, on hand-made simulated records."""

from __future__ import annotations

import pytest

from tasks.domain import prompts
from tasks.domain.supporter_format import ALT_REASONS, answer_regex, parse
from tasks.supporter import examples as ex
from tests.supporter_data import build_tiny_base, dialogue


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from tasks.domain import chat_template

    models = build_tiny_base(tmp_path_factory.mktemp("models"))
    return chat_template.load_tokenizer(models / "tokenizer")


def test_history_before_each_turn_ends_on_the_seeker():
    r = dialogue(0, n_turns=3)
    assert ex.history_before(r, 1) == [("seeker", r["messages"][1]["content"])]
    h3 = ex.history_before(r, 3)
    assert len(h3) == 5 and h3[-1][0] == "seeker" and h3[1] == ("supporter", r["turns"][0]["response"])
    with pytest.raises(ex.ExampleError, match="turn 4"):
        ex.history_before(r, 4)


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 1.0])
def test_adoption_rate_is_exact_and_alternatives_fill_the_other_choice(rate):
    records = [dialogue(i, n_turns=3) for i in range(4)]  # 12 turns; the teacher says Yes in 4
    out = ex.sft_examples(records, rate, seed=1)
    assert len(out) == 12 and sum(e["adopt"] == "Yes" for e in out) == int(rate * 12 + 0.5)
    for e in out:
        fields = parse(e["answer"])
        assert fields is not None and fields["adopt_reference"] == e["adopt"]
        t = next(t for r in records if r["id"] == e["dialogue_id"] for t in r["turns"] if t["turn"] == e["turn"])
        assert e["alternative"] == (t["adopt_reference"] != e["adopt"])
        if e["alternative"]:
            alt = t["alt_response_with_reference"] if e["adopt"] == "Yes" else t["alt_response_without_reference"]
            assert fields["response"] == alt and fields["adopt_reason"] == ALT_REASONS[e["adopt"]]
        else:
            assert fields["response"] == t["response"] and fields["adopt_reason"] == t["adopt_reason"]


def test_null_adoption_rate_keeps_the_teacher_and_the_draw_is_seeded():
    records = [dialogue(i) for i in range(4)]
    teacher = ex.sft_examples(records, None, 1)
    assert not any(e["alternative"] for e in teacher)
    a, b, c = (ex.sft_examples(records, 0.5, s) for s in (1, 1, 2))
    assert [e["adopt"] for e in a] == [e["adopt"] for e in b] != [e["adopt"] for e in c]


def test_answers_match_the_decoding_regex():
    import re

    for e in ex.sft_examples([dialogue(i) for i in range(3)], 0.5, 1):
        assert re.fullmatch(answer_regex(), e["answer"]), e["answer"]


def test_left_truncation_drops_old_turns_and_never_the_answer(tok):
    r = dialogue(1, n_turns=3)
    e = ex.sft_examples([r], 0.5, 1)[-1]
    long_hist = [(role, text * 6) for role, text in e["history"]]
    full = ex.fit_prompt(tok, 100_000, long_hist, e["target_values"], e["reference"], [e["answer"]])
    n_full = len(tok.apply_chat_template([*full.prompt, prompts.assistant(e["answer"])], tokenize=True,
                                         return_dict=True)["input_ids"])
    budget = n_full - 40
    fit = ex.fit_prompt(tok, budget, long_hist, e["target_values"], e["reference"], [e["answer"]])
    assert fit is not None and fit.dropped_turns >= 1
    msgs = [*fit.prompt, prompts.assistant(e["answer"])]
    assert len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]) <= budget
    assert msgs[-1]["content"] == e["answer"] and long_hist[-1][1].strip() in fit.prompt[-1]["content"]
    # one seeker turn longer than the budget: its beginning is cut, its end (what is answered) kept
    one = [("seeker", "I lost my job and " * 80 + "what now?")]
    cut = ex.fit_prompt(tok, 400, one, e["target_values"], e["reference"], [e["answer"]])
    assert cut is not None and cut.cut_tokens > 0 and "what now?" in cut.prompt[-1]["content"]
    assert ex.fit_prompt(tok, 50, one, e["target_values"], e["reference"], [e["answer"]]) is None  # answer too long


def test_dpo_rows_fit_both_responses(tok):
    r = dialogue(2, n_turns=3)
    s = ex.turn_states(r)[-1]
    hist = [(a, b * 3) for a, b in s["history"]]
    pair = {"id": "p", "history": hist, "target_values": s["target_values"], "reference": s["reference"],
            "chosen": "Response: short", "rejected": "Response: " + "That sounds hard; what helps? " * 4}
    last_only = ex.fit_prompt(tok, 100_000, hist[-1:], s["target_values"], s["reference"], [pair["rejected"]])
    budget = len(tok.apply_chat_template([*last_only.prompt, prompts.assistant(pair["rejected"])], tokenize=True,
                                         return_dict=True)["input_ids"]) + 10
    rep = ex.dpo_rows([pair], tok, budget)
    assert rep.truncated == 1 and len(rep.rows) == 1 and rep.dropped == 0
    row = rep.rows[0]
    for side in ("chosen", "rejected"):
        n = len(tok.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=True)["input_ids"])
        assert n <= budget and row[side][0]["content"] == pair[side]
