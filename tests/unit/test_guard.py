"""The crisis guard: precision/recall on the hand-labelled sets, idioms, negation, past events, the safe message in
every locale (a crisis line in each, sources for each, no blaming words) and what a guard event may contain."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.chat.guard import EventLog, Guard, GuardError, evaluate
from tasks.common import paths
from tests.params import group

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "guard"
#: Minimum figures on the held-out set (docs/safety.md reports the measured ones): a guard below these is broken.
MIN_RECALL, MIN_PRECISION = 0.95, 0.95


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard.load(group("guard"))


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_labelled_sets_have_both_classes_and_enough_lines():
    test, dev = rows("test.jsonl"), rows("dev.jsonl")
    assert len(test) >= 100 and len(dev) >= 100
    for r in test + dev:
        assert set(r) == {"text", "crisis", "kind"} and isinstance(r["crisis"], bool)
    assert 0.4 < sum(r["crisis"] for r in test) / len(test) < 0.6
    assert not {r["text"] for r in test} & {r["text"] for r in dev}, "the held-out set must not repeat dev lines"
    para = rows("test_paraphrase.jsonl")
    assert not {r["text"] for r in para} & {r["text"] for r in test + dev}, "the paraphrase set repeats a line"
    assert all(set(r) == {"text", "crisis", "kind"} for r in para) and 0.4 < sum(r["crisis"] for r in para) / len(para) < 0.6


@pytest.mark.parametrize("name", ["test.jsonl", "dev.jsonl"])
def test_precision_and_recall(guard, name):
    report = evaluate(guard, rows(name))
    assert report["recall"] >= MIN_RECALL, report["errors"]
    assert report["precision"] >= MIN_PRECISION, report["errors"]


#: The paraphrase set (written after lexicon v1, before v2's tuning; README in the fixtures folder): the lexicon's
#: known limit. v1 recalled .41 of its crises, v2 .52; the floor catches a lexicon that loses what v2 gained.
PARAPHRASE_MIN_RECALL = 0.5


def test_paraphrases_written_later(guard):
    report = evaluate(guard, rows("test_paraphrase.jsonl"))
    assert report["precision"] >= MIN_PRECISION, report["errors"]
    assert report["recall"] >= PARAPHRASE_MIN_RECALL, report["errors"]


@pytest.mark.parametrize("text", ["this exam is killing me", "I'd die for a pizza", "I’d die for a pizza",
                                  "My feet are killing me", "I'm dying to see it", "that was career suicide",
                                  "I almost killed myself laughing", "I shot myself in the foot there"])
def test_idioms_do_not_trigger(guard, text):
    v = guard.check(text)
    assert not v.crisis, v


@pytest.mark.parametrize("text,crisis", [
    ("I would never kill myself", False),
    ("I'm not suicidal", False),
    ("I don't want to die", False),
    ("I don't want to live", True),            # the negation is part of what the person says
    ("I'm not ok and I want to die", True),    # "not" belongs to another clause
    ("No one would notice if I killed myself", True),
    ("I can't stop thinking about killing myself", True),
    ("I tried to kill myself years ago, I'm doing well", False),
    ("I tried to kill myself last night", True),
    ("I used to cut myself but I'm cutting again", True),  # the present marker wins
    ("My friend says she is going to kill herself", True),
    ("My friend's brother killed himself in 2015", False),
    ("I WANT TO KILL MYSELF", True),
    ("kms", True),
])
def test_negation_past_and_third_party(guard, text, crisis):
    assert guard.check(text).crisis is crisis, guard.check(text)


@pytest.mark.parametrize(("text", "crisis"), [
    ("I feel awful right now and I have an exam tonight", False),  # two timing words are one signal
    ("I'm going out tonight and this weekend", False),
    ("I'm so done with this semester, party tonight", False),
    ("I'm on the bridge right now", True),  # a height + timing: two different signals
    ("I'm done, I've said goodbye to everyone", True),
])
def test_weak_signals_pair_only_across_kinds(guard, text, crisis):
    assert guard.check(text).crisis is crisis


def test_reason_never_quotes_the_message(guard):
    text = "I have a secret plan and I want to kill myself with the pills under my bed"
    v = guard.check(text)
    assert v.crisis and v.rule
    words = {w for w in re.findall(r"[a-z]{4,}", text.lower())} - {"kill", "myself"}
    assert not [w for w in words if w in v.reason.lower()], v.reason


def test_every_locale_has_a_crisis_line_sources_and_no_blame(guard):
    blaming = re.compile(r"\b(selfish|your fault|should not|shouldn't|must not|don't be|why would you|"
                         r"overreact\w*|dramatic|attention|calm down|stop it|weak)\b", re.I)
    contact = re.compile(r"https?://\S+|\b\d[\d -]{1,12}\d\b")
    for name, msg in guard.locales.items():
        text = msg.text
        assert contact.search(" ".join(r["contact"] for r in msg.resources)), name
        assert all(r["source"].startswith("https://") for r in msg.resources), name
        assert not blaming.search(text), (name, blaming.search(text))
        assert "automated" in text or "automatisches" in text or "자동" in text, name  # says what it is


def test_locale_falls_back_to_language_then_english(guard):
    assert guard.locale_for("en-GB") == "en-GB"
    assert guard.locale_for("en-NZ") == "en"
    assert guard.locale_for("de-AT") == "en"  # no plain "de": English, with the international lines
    assert "116 123" in guard.safe_message("en-GB").text
    assert "988" in guard.safe_message("en-US").text


def test_event_has_no_message_text(guard, tmp_path):
    text = "Marguerite, tonight at the Kessington bridge I will take my own life"
    v = guard.check(text)
    assert v.crisis
    log = EventLog(tmp_path / "events.jsonl")
    log.write(guard.event(v, "chat", "en-GB", "s1", 3))
    line = (tmp_path / "events.jsonl").read_text()
    event = json.loads(line)
    assert set(event) == {"time", "source", "session", "turn", "rule", "kind", "locale", "lexicon", "resources"}
    assert event["rule"] in {r.id for r in guard.lexicon.rules} and event["turn"] == 3
    for word in ("Marguerite", "Kessington", "bridge", "own life"):
        assert word not in line


def test_bad_lexicon_names_file_and_entry(tmp_path):
    lex = (paths.ROOT / "tasks/chat/crisis_lexicon.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "lex.yaml"
    bad.write_text(lex.replace("pattern: '\\bsu[i1!]c[i1!]dal\\b'", "pattern: '(unclosed'"), encoding="utf-8")
    p = group("guard", lexicon=str(bad))
    with pytest.raises(GuardError, match=r"lex\.yaml: rules\[\d+\] \(ideation\.suicidal\): not a valid regular"):
        Guard.load(p)
    p = group("guard", locale="xx")
    with pytest.raises(GuardError, match="guard.locale 'xx'"):
        Guard.load(p)


def test_guard_check_cli_prints_one_json_line_per_message():
    lines = ["this exam is killing me", "I'd die for a pizza", "i want to end my life", "", "I feel fine"]
    out = subprocess.run([sys.executable, "-m", "tasks.cli.main", "guard", "check"], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, cwd=paths.ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    got = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(got) == len(lines)
    assert [g["crisis"] for g in got] == [False, False, True, False, False]
    assert all(set(g) == {"crisis", "reason"} and isinstance(g["reason"], str) for g in got)
