"""The supporter's value/emotion reward and pair mining, against hand-computed values (gamma, h, truncated
continuations, ties at T_diff, consistency), the contract commands end to end, and the naive loop on random data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import supporter_reward as bench
from tasks.cli.main import app
from tasks.common.io import read_jsonl, write_jsonl
from tasks.supporter import pairs as P
from tasks.supporter import reward as R

A, B, C = "Achievement", "Benevolence: caring", "Stimulation"


def turn(**probs: float) -> dict:
    return {"value_probs": {k.replace("_", " "): v for k, v in probs.items()}}


def vp(*present: str, low: tuple[str, ...] = ()) -> dict:
    """A seeker turn where the named categories have prob 0.9 and the `low` ones 0.1."""
    return {"value_probs": {**{c: 0.9 for c in present}, **{c: 0.1 for c in low}}}


def row(state: str, cand: str, targets: list[str], conts: list[list[dict]], **extra) -> dict:
    return {"state_id": state, "candidate_id": cand, "target_values": targets, "continuations": conts, **extra}


def rewards_of(tmp_path, rows, gamma, horizon, threshold=0.5, name="in.jsonl"):
    write_jsonl(tmp_path / name, rows)
    s = R.read_scored(tmp_path / name)
    return R.value_reward(s, np.full(20, threshold), gamma, horizon), s


# ------------------------------------------------------------------------------------------ hand-computed rewards
def test_discounted_sum_over_the_horizon(tmp_path):
    # N = 1, 2, 3 in the three later seeker turns
    conts = [[vp(A, low=(B, C)), vp(A, B, low=(C,)), vp(A, B, C)]]
    r, _ = rewards_of(tmp_path, [row("s", "a", [A, B, C], conts)], gamma=0.5, horizon=3)
    assert r.per_turn[0, 0].tolist() == [1, 2, 3]
    assert r.reward[0] == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)  # 2.75
    r2, _ = rewards_of(tmp_path, [row("s", "a", [A, B, C], conts)], gamma=0.5, horizon=2)
    assert r2.reward[0] == pytest.approx(1 + 0.5 * 2)  # h = 2 ignores the third turn
    r3, _ = rewards_of(tmp_path, [row("s", "a", [A, B, C], conts)], gamma=1.0, horizon=3)
    assert r3.reward[0] == pytest.approx(6.0)
    r0, _ = rewards_of(tmp_path, [row("s", "a", [A, B, C], conts)], gamma=0.0, horizon=3)
    assert r0.reward[0] == pytest.approx(1.0)  # gamma 0: only the next turn (0^0 = 1)


def test_truncated_continuations_count_zero_beyond_their_end(tmp_path):
    # continuation 1: N = 2, 1, 1; continuation 2 ended after one turn (N = 1); continuation 3 is empty
    conts = [[vp(A, B), vp(A), vp(B)], [vp(A)], []]
    r, s = rewards_of(tmp_path, [row("s", "a", [A, B], conts)], gamma=0.5, horizon=3)
    assert s.cont_mask[0].tolist() == [True, True, True]
    assert r.per_continuation[0].tolist() == pytest.approx([2 + 0.5 + 0.25, 1.0, 0.0])
    assert r.reward[0] == pytest.approx((2.75 + 1.0 + 0.0) / 3)


def test_presence_is_at_or_above_the_threshold_and_missing_probs_are_absent(tmp_path):
    conts = [[{"value_probs": {A: 0.5, B: 0.4999}}, {"value_probs": {}}, {"value_probs": None}]]
    r, _ = rewards_of(tmp_path, [row("s", "a", [A, B, C], conts)], gamma=1.0, horizon=3, threshold=0.5)
    assert r.per_turn[0, 0].tolist() == [1, 0, 0]


def test_only_the_rows_target_values_count(tmp_path):
    conts = [[vp(A, B, C)]]
    r, _ = rewards_of(tmp_path, [row("s", "a", [C], conts), row("s", "b", [], conts)], gamma=0.5, horizon=1)
    assert r.reward.tolist() == [1.0, 0.0]


def test_presence_rule_per_category_cuts_and_min_chars(tmp_path):
    rows = [row("s", "a", [A, B], [[{"value_probs": {A: 0.3, B: 0.3}, "utterance": "I want to try again"},
                                    {"value_probs": {A: 0.9, B: 0.9}, "utterance": " o k "}]])]
    write_jsonl(tmp_path / "x.jsonl", rows)
    s = R.read_scored(tmp_path / "x.jsonl")
    th = np.full(20, 0.5)
    th[R.VALUE_INDEX[A]] = 0.2  # per-category cut: A present at 0.3, B not
    r = R.value_reward(s, th, 1.0, 2, min_chars=3)
    assert r.per_turn[0, 0].tolist() == [1, 0]  # "ok" has 2 non-space characters: it expresses nothing
    assert R.value_reward(s, th, 1.0, 2, min_chars=0).per_turn[0, 0].tolist() == [1, 2]


def test_the_rules_gate_clears_turns_whose_top_probability_is_low_and_agrees_with_the_rule(tmp_path):
    """min_top looks at all 20 categories of the turn, not only the targets; the reward and PresenceRule agree."""
    from tasks.annotators.presence import PresenceRule

    turns = [{"value_probs": {A: 0.3, B: 0.3}, "utterance": "The committee meets on Tuesday."},
             {"value_probs": {A: 0.3, C: 0.8}, "utterance": "I want to try something new again"}]
    write_jsonl(tmp_path / "g.jsonl", [row("s", "a", [A, B], [turns])])
    s = R.read_scored(tmp_path / "g.jsonl")
    th = np.full(20, 0.25)
    assert R.value_reward(s, th, 1.0, 2).per_turn[0, 0].tolist() == [2, 1]
    gated = R.value_reward(s, th, 1.0, 2, min_top=0.5)
    assert gated.per_turn[0, 0].tolist() == [0, 1]  # turn 2 passes the gate through C, a non-target category
    rule = PresenceRule(tuple(th), 3, min_top=0.5)
    probs = np.zeros((2, 20))
    for i, t in enumerate(turns):
        for c, v in t["value_probs"].items():
            probs[i, R.VALUE_INDEX[c]] = v
    mask = rule.present([t["utterance"] for t in turns], probs)
    assert [int(mask[i, [R.VALUE_INDEX[A], R.VALUE_INDEX[B]]].sum()) for i in range(2)] == [0, 1]
    assert PresenceRule.from_dict(rule.to_dict()) == rule and rule.to_dict()["min_top"] == 0.5


def test_emotion_rewards_positivity_and_intensity_drop(tmp_path):
    conts = [[{"positivity": 0.2, "emotion_intensity": 3}, {"positivity": 0.6, "emotion_intensity": 2}],
             [{"positivity": 0.4, "emotion_intensity": 5}]]
    write_jsonl(tmp_path / "e.jsonl", [row("s", "a", [A], conts, seeker_intensity_before=4)])
    s = R.read_scored(tmp_path / "e.jsonl")
    pos = R.emotion_reward(s, "positivity", 0.5, 2)
    assert pos.reward[0] == pytest.approx(((0.2 + 0.5 * 0.6) + 0.4) / 2)
    drop = R.emotion_reward(s, "intensity_drop", 0.5, 2)  # 4 -> 3 -> 2 and 4 -> 5
    assert drop.per_continuation[0].tolist() == pytest.approx([1 + 0.5 * 1, -1.0])
    write_jsonl(tmp_path / "f.jsonl", [row("s", "a", [A], [[vp(A)]])])
    with pytest.raises(R.RewardInputError, match="positivity"):
        R.emotion_reward(R.read_scored(tmp_path / "f.jsonl"), "positivity", 0.5, 2)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad,match", [
    ({"state_id": "s", "candidate_id": "b", "target_values": ["Achievment"], "continuations": [[]]},
     r"in\.jsonl:3: target value 'Achievment'"),
    ({"state_id": "s", "candidate_id": "b", "target_values": [A], "continuations": [[{"value_probs": {"Fame": 1}}]]},
     r"in\.jsonl:3: value_probs key 'Fame'"),
    ({"state_id": "s", "candidate_id": "a", "target_values": [A], "continuations": [[]]},
     r"in\.jsonl:3: candidate 'a' of state 's' appears again \(first at line 1\)"),
    ({"state_id": "s", "candidate_id": "b", "target_values": [A], "continuations": []},
     r"in\.jsonl:3: key 'continuations' is empty"),
    ({"state_id": "s", "candidate_id": 7, "target_values": [A], "continuations": [[]]},
     r"in\.jsonl:3: key 'candidate_id' must be a string"),
    ({"state_id": "s", "candidate_id": "b", "continuations": [[]]}, r"in\.jsonl:3: key 'target_values' is missing"),
])
def test_bad_rows_name_file_line_and_key(tmp_path, bad, match):
    (tmp_path / "in.jsonl").write_text(json.dumps(row("s", "a", [A], [[vp(A)]])) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(R.RewardInputError, match=match):
        R.read_scored(tmp_path / "in.jsonl")


def test_malformed_json_names_its_line(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps(row("s", "a", [A], [[vp(A)]])) + '\n{"state_id": "s", \n')
    with pytest.raises(R.RewardInputError, match=r"in\.jsonl:2: malformed JSON"):
        R.read_scored(tmp_path / "in.jsonl")


# ------------------------------------------------------------------------------------------ pairs
def test_ties_at_t_diff_are_not_pairs():
    state = np.array([0, 0, 0])
    reward = np.array([1.5, 1.0, 1.0 + 1e-12])
    assert len(P.mine(state, reward, 0.5)) == 0  # gaps of exactly 0.5 (and 0.5 - 1e-12) are ties
    p = P.mine(state, np.array([1.5, 1.0, 0.9]), 0.5)
    assert (p.chosen.tolist(), p.rejected.tolist()) == ([0], [2]) and p.delta[0] == pytest.approx(0.6)
    # a gap that is T_diff on paper but a rounding error above it in floats: gamma 0.1 -> 1 + 0.1 vs 1
    assert 1.1 - 1.0 > 0.1 and len(P.mine(np.array([0, 0]), np.array([1 + 0.1, 1.0]), 0.1)) == 0


def test_pairs_never_cross_states_nor_pair_a_candidate_with_itself():
    rng = np.random.default_rng(3)
    state = rng.integers(0, 40, 300)
    reward = rng.integers(0, 4, 300).astype(float)
    for t in (-1.0, 0.0, 1.0):  # even a negative T_diff never pairs a row with itself
        p = P.mine(state, reward, t)
        assert len(p) > 0 and (state[p.chosen] == state[p.rejected]).all() and (p.chosen != p.rejected).all()
        assert np.allclose(p.delta, reward[p.chosen] - reward[p.rejected]) and (p.delta > t).all()
    assert len(P.mine(np.array([0, 1]), np.array([5.0, 0.0]), 0.0)) == 0  # different states: no pair


def test_output_order_is_state_then_chosen_then_rejected():
    state = np.array([1, 0, 1, 0, 0])  # codes are states by first appearance in real inputs; any ints work here
    reward = np.array([2.0, 3.0, 0.0, 1.0, 0.0])
    p = P.mine(state, reward, 0.5)
    assert list(zip(p.chosen.tolist(), p.rejected.tolist(), strict=True)) == [(1, 3), (1, 4), (3, 4), (0, 2)]


def test_consistency_drops_pairs_that_a_continuation_reverses():
    state = np.array([0, 0, 0])
    per_cont = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])  # a beats b on average, loses in continuation 2
    mask = np.ones((3, 2), dtype=bool)
    reward = per_cont.mean(1)
    plain = P.mine(state, reward, 0.1)
    strict = P.mine(state, reward, 0.1, per_cont, mask)
    assert {(a, b) for a, b in zip(plain.chosen, plain.rejected, strict=True)} == {(0, 1), (0, 2), (1, 2)}
    assert {(a, b) for a, b in zip(strict.chosen, strict.rejected, strict=True)} == {(0, 2), (1, 2)}
    mask[1, 1] = False  # b lacks continuation 2: the only comparison left agrees
    assert len(P.mine(state, reward, 0.1, per_cont, mask)) == 3


def test_cap_per_state_keeps_the_largest_gaps():
    state = np.array([0, 0, 0, 1, 1])
    reward = np.array([3.0, 1.0, 0.0, 1.0, 0.0])
    p = P.cap_per_state(P.mine(state, reward, 0.0), state, 2)
    assert sorted(zip(p.chosen.tolist(), p.rejected.tolist(), strict=True)) == [(0, 1), (0, 2), (3, 4)]


def test_vectorised_equals_the_naive_loop_on_random_data():
    s = bench.synthetic(4000, seed=11)
    want = bench.naive(bench.as_python(s))
    got = bench.vectorised(s)
    assert [(int(a), int(b)) for a, b in zip(got.chosen, got.rejected, strict=True)] == [(a, b) for a, b, _ in want]
    assert np.allclose(got.delta, [d for *_, d in want]) and len(want) > 100


# ------------------------------------------------------------------------------------------ the contract commands
def test_reward_and_pairs_commands(tmp_path):
    rows = [row("s1", "a", [A, B], [[vp(A, B), vp(A)], [vp(A)]], extra="kept"),
            row("s1", "b", [A, B], [[vp(low=(A, B)), vp(A)], [vp(B)]]),
            row("s1", "c", [A, B], [[vp(A)], [vp(A)]]),
            row("s2", "a", [C], [[vp(C), vp(C), vp(C)]])]
    write_jsonl(tmp_path / "f.jsonl", rows)
    run = CliRunner().invoke
    res = run(app, ["supporter", "reward", "--input", str(tmp_path / "f.jsonl"), "--out", str(tmp_path / "g.jsonl"),
                    "--gamma", "0.5", "--horizon", "2", "--threshold", "0.5"])
    assert res.exit_code == 0, res.output
    g = list(read_jsonl(tmp_path / "g.jsonl"))
    assert [r["candidate_id"] for r in g] == ["a", "b", "c", "a"] and g[0]["extra"] == "kept"
    assert g[0]["n"] == [[2, 1], [1]] and g[1]["n"] == [[0, 1], [1]] and g[3]["n"] == [[1, 1, 1]]
    assert [r["reward"] for r in g] == pytest.approx([(2.5 + 1) / 2, (0.5 + 1) / 2, 1.0, 1.5])
    res = run(app, ["supporter", "pairs", "--input", str(tmp_path / "g.jsonl"), "--t-diff", "0.25",
                    "--out", str(tmp_path / "p.jsonl")])
    assert res.exit_code == 0, res.output
    p = list(read_jsonl(tmp_path / "p.jsonl"))
    # rewards 1.75, 0.75, 1.0 in s1: a>b (1.0), a>c (0.75); c>b is 0.25, a tie at T_diff; s2 has one candidate
    assert p == [{"state_id": "s1", "chosen": "a", "rejected": "b", "delta": 1.0},
                 {"state_id": "s1", "chosen": "a", "rejected": "c", "delta": 0.75}]


def test_reward_command_reports_bad_input(tmp_path):
    (tmp_path / "f.jsonl").write_text(json.dumps(row("s", "a", ["Nope"], [[]])) + "\n")
    res = CliRunner().invoke(app, ["supporter", "reward", "--input", str(tmp_path / "f.jsonl"), "--out",
                                   str(tmp_path / "g.jsonl"), "--gamma", "0.5", "--horizon", "2", "--threshold", "0.5"])
    assert res.exit_code == 2 and "f.jsonl:1: target value 'Nope'" in res.output
    assert not (tmp_path / "g.jsonl").exists()
