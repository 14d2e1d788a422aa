"""The LLM client against a real loopback HTTP server: cache keys, re-asks, retries, ledger, budget."""

from __future__ import annotations

import asyncio

import pytest

from tasks.domain.sim_prompts import SEEKER_SCHEMA
from tasks.llm.client import LLM, BudgetExceeded, LLMError, Role, cap_strings, validate_json
from tests.fakes.mock_llm import MockServer

MSGS = [{"role": "user", "content": "hello"}]


def _llm(url: str, cache, **kw) -> LLM:
    price = kw.pop("price", 0.0)
    roles = {"seeker": Role("seeker", url, "mock", 0.7, 50, price_prompt_per_mtok=price,
                            price_completion_per_mtok=price)}
    return LLM(roles, cache, **{"timeout_s": 2.0, "max_retries": 4, "max_reasks": 2, **kw})


def _ask(llm: LLM, n: int = 1, **kw):
    async def go():
        try:
            return [await llm.ask("seeker", [*MSGS, {"role": "user", "content": str(i)}], schema=SEEKER_SCHEMA,
                                  **kw) for i in range(n)]
        finally:
            await llm.aclose()

    return asyncio.run(go())


def test_cache_key_ignores_endpoint_but_not_sampling(tmp_path):
    a = Role("seeker", "http://127.0.0.1:1/v1", "m", 0.7, 50, api_key="k1")
    b = Role("seeker", "http://127.0.0.1:2/v1", "m", 0.7, 50, api_key="k2")  # another random port, another key
    llm = LLM({"seeker": a}, tmp_path / "c.sqlite")
    body = {"messages": MSGS, "temperature": 0.7, "max_tokens": 50}
    assert llm.request_key(a, body) == llm.request_key(b, body)
    assert llm.request_key(a, body) != llm.request_key(a, {**body, "temperature": 0.8})
    assert llm.request_key(a, body) != llm.request_key(Role("seeker", a.base_url, "m", 0.7, 50, fingerprint="w2"), body)
    llm.cache.close()


def test_cap_strings_and_validation():
    capped = cap_strings(SEEKER_SCHEMA, 10)
    assert capped["properties"]["utterance"]["maxLength"] == 10
    assert "maxLength" not in SEEKER_SCHEMA["properties"]["utterance"]  # the original is untouched
    ok = validate_json('{"utterance": "hi", "emotion_intensity": 3, "end_conversation": false}', capped)
    assert ok["emotion_intensity"] == 3
    with pytest.raises(ValueError, match="emotion_intensity"):
        validate_json('{"utterance": "hi", "emotion_intensity": 7, "end_conversation": false}', capped)
    with pytest.raises(ValueError, match="not valid JSON"):
        validate_json('{"utterance": ', capped)


def test_rerun_pays_nothing(tmp_path):
    with MockServer() as m:
        first = _ask(_llm(m.url, tmp_path / "c.sqlite"), n=3)
        hits = m.state.hits
        again = _llm(m.url.replace("127.0.0.1", "localhost"), tmp_path / "c.sqlite")  # another URL, same cache
        second = _ask(again, n=3)
        assert second == first
        assert m.state.hits == hits == 3
        assert again.ledger.roles["seeker"].cached == 3 and again.ledger.roles["seeker"].requests == 0


def test_invalid_answers_are_reasked_then_fail(tmp_path):
    with MockServer(fault_rate=1.0, fault_kinds=("invalid_json",)) as m:
        llm = _llm(m.url, tmp_path / "c.sqlite", max_reasks=2)
        with pytest.raises(LLMError, match="after 2 re-asks"):
            _ask(llm)
        assert m.state.hits == 3  # first answer + 2 re-asks, no more
        assert llm.ledger.roles["seeker"].reasks == 2 and llm.ledger.roles["seeker"].failures == 1


def test_retries_counted_per_http_attempt(tmp_path):
    with MockServer(fault_rate=0.4, fault_kinds=("429", "500"), seed=3) as m:
        llm = _llm(m.url, tmp_path / "c.sqlite", max_retries=8, max_concurrency=4)

        async def go():
            try:
                return await asyncio.gather(*(llm.ask("seeker", [{"role": "user", "content": str(i)}],
                                                      schema=SEEKER_SCHEMA) for i in range(12)))
            finally:
                await llm.aclose()

        answers = asyncio.run(go())
        led = llm.ledger.roles["seeker"]
        assert len(answers) == 12 and led.requests == 12
        assert led.http_attempts == m.state.hits
        assert led.retries == sum(m.state.faults.values()) > 0


def test_budget_cap_stops_before_spending_more(tmp_path):
    with MockServer() as m:
        # mock usage: 10 prompt + 5 completion tokens; at $1e5 per 1M tokens one call costs $1.5
        llm = _llm(m.url, tmp_path / "c.sqlite", price=1e5, budget_usd=2.0)
        with pytest.raises(BudgetExceeded, match="budget_usd"):
            _ask(llm, n=5)
        assert m.state.hits == 2  # $1.5 < $2 allows a second call; at $3 the third is refused
        assert llm.ledger.cost_usd == pytest.approx(3.0)
        # everything paid so far is cached: a re-run with a bigger budget pays only for the rest
        llm2 = _llm(m.url, tmp_path / "c.sqlite", price=1e5, budget_usd=100.0)
        _ask(llm2, n=5)
        assert m.state.hits == 5 and llm2.ledger.roles["seeker"].cached == 2


def test_local_model_fingerprint_covers_weights_and_serving_code(tmp_path, monkeypatch):
    from tasks.llm import client as llm_mod

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"weights")
    fp = llm_mod.model_fingerprints({"m": str(tmp_path / "m")})["m"]
    (tmp_path / "m" / "w.bin").write_bytes(b"retrained")
    assert llm_mod.model_fingerprints({"m": str(tmp_path / "m")})["m"].split("-")[0] != fp.split("-")[0]
    served = tmp_path / "serve.py"
    served.write_text("# other decoding code\n")
    monkeypatch.setattr(llm_mod, "__file__", str(tmp_path / "llm.py"))  # serve.py is looked up beside llm.py
    assert llm_mod.model_fingerprints({"m": str(tmp_path / "m")})["m"].split("-")[1] != fp.split("-")[1]
