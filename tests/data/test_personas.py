"""Personas from the mirror's seeds: seed facts kept, near-duplicates dropped (real MiniLM), train/eval disjoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import personas
from tasks.common.io import read_jsonl
from tasks.llm.client import LLM, Role
from tests.fakes.mock_llm import MockServer

FIELDS = {"id", "problem_type", "emotion_type", "initial_intensity", "context", "source"}


@pytest.fixture
def external(mirror, tmp_path) -> Path:
    """data/external layout (what the sources stage writes), linked to the mirror's files."""
    ext = tmp_path / "external"
    (ext / "esconv").mkdir(parents=True)
    (ext / "seeker_personas").mkdir()
    (ext / "esconv" / "train.json").symlink_to(mirror / "esconv" / "train.json")
    (ext / "seeker_personas" / "card_high_en.json").symlink_to(mirror / "seeker-personas" / "card_high_en.json")
    return ext


def test_seeds_from_mirror(external):
    esconv, cards = personas.load_seeds(external / "esconv" / "train.json",
                                        external / "seeker_personas" / "card_high_en.json")
    assert len(esconv) > 800 and len(cards) > 300
    assert all(1 <= s["hint"]["initial_intensity"] <= 5 for s in esconv)
    assert all(s["hint"] is None and s["text"] for s in cards)
    picked = personas.sample_seeds(esconv, cards, 10, 0.7, seed=1)
    assert sum(s["hint"] is not None for s in picked) == 7
    assert picked == personas.sample_seeds(esconv, cards, 10, 0.7, seed=1)  # deterministic


def test_dedup_drops_near_copies_only():
    ps = [{"id": str(i), "context": c} for i, c in enumerate([
        "You are a nurse who lost her job last month and fears telling her family.",
        "You are a nurse who lost your job last month and fear telling your family.",
        "You are a student whose best friend moved abroad; you feel lonely at weekends.",
    ])]
    kept, dropped = personas.dedup(ps, 0.85, personas.embed([p["context"] for p in ps]))
    assert [p["id"] for p in kept] == ["0", "2"] and dropped == 1


def test_split_is_disjoint_and_stable():
    ps = [{"id": f"p{i}"} for i in range(10)]
    tr, ev = personas.split(ps, 0.2, seed=3)
    assert len(ev) == 2 and not ({p["id"] for p in tr} & {p["id"] for p in ev})
    assert personas.split(ps, 0.2, seed=3) == (tr, ev)


def test_personas_run_writes_contract(external, tmp_path):
    class Cfg:
        count, oversample, esconv_fraction, dedup_threshold, eval_fraction, max_failed_fraction = 6, 1.5, 0.5, 0.999, 0.34, 0.2

    with MockServer(fault_rate=0.2, timeout_sleep_s=2.0) as m:
        llm = LLM({"persona_writer": Role("persona_writer", m.url, "mock", 0.9, 200)}, tmp_path / "c.sqlite",
                  timeout_s=1.0, max_retries=6, max_reasks=3)
        report = personas.run(llm, Cfg, 1234, external, tmp_path / "out")
    tr = list(read_jsonl(tmp_path / "out" / "train.jsonl"))
    ev = list(read_jsonl(tmp_path / "out" / "eval.jsonl"))
    assert report["writer_failures"] == 0 and report["seeds"] == 9
    assert report["personas"] == len(tr) + len(ev) <= 6 and len(ev) >= 1
    assert not ({p["id"] for p in tr} & {p["id"] for p in ev})
    for p in tr + ev:
        assert set(p) == FIELDS and 1 <= p["initial_intensity"] <= 5 and p["context"]
    esconv_ps = [p for p in tr + ev if p["source"].startswith("esconv-train:")]
    assert esconv_ps  # ESConv facts are kept as recorded: intensity comes from the survey, a string "1".."5"
    assert all(isinstance(p["initial_intensity"], int) for p in esconv_ps)
