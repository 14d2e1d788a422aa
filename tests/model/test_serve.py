"""`esvr serve` with a tiny random model: constrained decoding makes its answers parse, and the simulation runs
end to end through the stage's own local server (the tiny profile's path)."""

from __future__ import annotations

import json

import httpx
import pytest

from tasks import simulate
from tasks.common.io import read_jsonl, write_jsonl
from tasks.domain import prompts
from tasks.domain.sim_prompts import SEEKER_SCHEMA, TEACHER_SCHEMA, tvd_regex
from tasks.llm.client import cap_strings, open_llm, validate_json
from tasks.llm.serve import parse_model_specs
from tests.tiny_chat import build_tiny_chat_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


def test_model_specs():
    assert parse_model_specs(["models/tvd"]) == {"tvd": "models/tvd"}
    assert parse_model_specs(["a=models/x", "b=/abs/y"]) == {"a": "models/x", "b": "/abs/y"}
    with pytest.raises(ValueError, match="twice"):
        parse_model_specs(["a=x", "a=y"])


@pytest.mark.slow
def test_tiny_model_answers_parse_and_simulation_runs(tiny_model, tmp_path):
    """The tiny profile's path: `open_llm` starts `esvr serve` itself (random port) from params-shaped settings."""
    import openai

    from tests.params import group

    tiny_roles = group("llm").model_dump()["roles"]
    role = {"base_url": "local", "temperature": 0.8, "max_tokens": 120}
    over = {"persona_writer": {"model": "base"}, "seeker": {"model": "base"},
            "supporter_teacher": {"model": "base", "max_tokens": 400}, "judge": {"model": "base"},
            "tvd": {"model": "tvd"}, "rg": {"model": "rg", "max_tokens": 30}}
    params = group(
        "llm", local_models={"base": str(tiny_model), "tvd": str(tiny_model), "rg": str(tiny_model)},
        roles={name: {**tiny_roles[name], **role, **o} for name, o in over.items()},
        cache_dir=str(tmp_path / "cache"), max_concurrency=2, timeout_s=300, max_reasks=4, max_string_chars=24)
    with open_llm(params, simulate.ROLES, tmp_path) as llm:
        url = llm.roles["seeker"].base_url
        assert url.startswith("http://127.0.0.1:") and llm.roles["tvd"].fingerprint
        assert {m["id"] for m in httpx.get(url + "/models").json()["data"]} == {"base", "tvd", "rg"}
        client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=120)
        schema = cap_strings(SEEKER_SCHEMA, 30)
        r = client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hello"}], max_tokens=120, temperature=1.0, seed=1,
            response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}})
        obj = validate_json(r.choices[0].message.content, SEEKER_SCHEMA)  # an untrained model, yet valid JSON
        assert obj["emotion_intensity"] in (1, 2, 3, 4, 5)
        r = client.chat.completions.create(
            model="tvd", messages=[{"role": "user", "content": "hi"}], max_tokens=120, temperature=1.0, seed=2,
            extra_body={"structured_outputs": {"regex": tvd_regex()}})
        assert prompts.parse_tvd_answer(r.choices[0].message.content)  # names real value categories
        r = client.chat.completions.create(model="rg", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        assert r.usage.completion_tokens <= 5  # free text, no constraint

        write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "problem_type": "job crisis", "emotion_type": "anxiety",
                                            "initial_intensity": 4, "context": "You lost your job."}])
        sim = {"personas": None, "min_turns": 1, "max_turns": 1, "validation_fraction": 0.0}
        report = simulate.run(llm, tmp_path / "p.jsonl", tmp_path / "out", sim, 1, tmp_path / "progress", 2)
    assert report["dialogues"] == 1, report
    (rec,) = read_jsonl(tmp_path / "out" / "train.jsonl")
    validate_json(json.dumps({k: rec["turns"][0][k] for k in TEACHER_SCHEMA["properties"]}), TEACHER_SCHEMA)
    assert len(rec["turns"][0]["target_values"]) == 3


def test_resolve_registered_model(tiny_model, mlflow_store):
    """`esvr serve --model models:/NAME@ALIAS` serves what the train stage registered."""
    import mlflow
    from mlflow import MlflowClient

    from tasks.llm.serve import resolve_model_uri

    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tiny_model), "model")
    client = MlflowClient()
    client.create_registered_model("tiny-test")
    v = client.create_model_version("tiny-test", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("tiny-test", "champion", v.version)
    path = resolve_model_uri("models:/tiny-test@champion")
    assert (tiny_model / "config.json").read_bytes() == (__import__("pathlib").Path(path) / "config.json").read_bytes()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_uri(str(mlflow_store))  # not a model folder: the error says what is missing
