"""Config: every shipped profile loads; bad params fail fast, naming file, line and key."""

from __future__ import annotations

import pytest
import yaml

from tasks.common import config
from tasks.common.config import ConfigError, load_params, load_profile, shipped_profiles


@pytest.mark.parametrize("name", shipped_profiles())
def test_every_shipped_profile_loads(name):
    p = load_profile(name)
    assert p.profile == name


def test_shipped_profiles_are_tiny_and_paper():
    assert {"tiny", "paper"} <= set(shipped_profiles())


def test_params_yaml_is_a_rendered_profile():
    active = load_params()
    assert config.render_profile(active.profile) == config.paths.PARAMS_FILE.read_text(encoding="utf-8")


def _write(tmp_path, data) -> str:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def test_unknown_key_is_named_with_file_and_line(tmp_path):
    data = load_profile("tiny").model_dump()
    data["sources"]["datasetz"] = ["x"]
    p = _write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_params(p)
    msg = str(e.value)
    assert "sources.datasetz" in msg and str(p) in msg and "unknown key" in msg
    line = [i for i, text in enumerate(p.read_text().splitlines(), 1) if "datasetz" in text][0]
    assert f"{p}:{line}" in msg


def test_wrong_type_is_named(tmp_path):
    data = load_profile("tiny").model_dump()
    data["seed"] = "not-a-number"
    p = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=r"seed"):
        load_params(p)


def test_unknown_dataset_is_rejected(tmp_path):
    data = load_profile("tiny").model_dump()
    data["sources"]["datasets"] = ["touche23", "nope"]
    with pytest.raises(ConfigError, match=r"sources.datasets.*nope"):
        load_params(_write(tmp_path, data))


def test_override_error_points_at_the_overriding_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config.paths, "PROFILES_DIR", tmp_path)
    (tmp_path / "tiny.yaml").write_text((config.paths.ROOT / "profiles" / "tiny.yaml").read_text())
    (tmp_path / "bad.yaml").write_text("extends: tiny\nprofile: paper\ntracking:\n  experimnt: x\n")
    with pytest.raises(ConfigError) as e:
        load_profile("bad")
    assert f"{tmp_path / 'bad.yaml'}:4: tracking.experimnt" in str(e.value)


def test_group_view_refuses_undeclared_groups():
    view = config.GroupView(load_profile("tiny"), ["sources"], "demo")
    assert view.sources.datasets
    assert view.profile == "tiny"
    with pytest.raises(AttributeError, match="does not declare"):
        _ = view.tracking


def test_dataset_length_filter_may_not_exceed_the_training_window(tmp_path, monkeypatch):
    """One fact, two stages: the datasets filter (in tokens) must not keep examples the trainer would truncate."""
    monkeypatch.setattr(config.paths, "PROFILES_DIR", tmp_path)
    (tmp_path / "tiny.yaml").write_text((config.paths.ROOT / "profiles" / "tiny.yaml").read_text())
    (tmp_path / "long.yaml").write_text("extends: tiny\ndatasets:\n  max_length: 4096\n")
    with pytest.raises(ConfigError) as e:
        load_profile("long")
    msg = str(e.value)
    assert f"{tmp_path / 'long.yaml'}:3: datasets.max_length (4096) exceeds train.trainer.max_length (384" in msg
    assert f"{tmp_path / 'tiny.yaml'}:" in msg  # where the trainer's window is set
    (tmp_path / "short.yaml").write_text("extends: tiny\ndatasets:\n  max_length: 256\n")
    assert load_profile("short").datasets.max_length == 256  # a tighter filter is fine


def test_group_view_guards_declared_sub_groups():
    """A stage that declares `train.tvd` and `base_model.dtype` reads those, not the rest of `train`/`base_model`."""
    view = config.GroupView(load_profile("tiny"), ["train.tvd", "train.run", "base_model.dtype"], "demo")
    assert view.train.tvd.args["max_steps"] > 0 and view.train.run.torch_threads >= 1
    assert view.base_model.dtype == "float32"
    with pytest.raises(AttributeError, match=r"params 'train.rg_dpo'"):
        _ = view.train.rg_dpo
    with pytest.raises(AttributeError, match=r"params 'base_model.name'"):
        _ = view.base_model.name


def _fields_with_defaults(model: type, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    found = []
    for name, f in model.model_fields.items():
        if not f.is_required():
            found.append(prefix + name)
        for t in getattr(f.annotation, "__args__", ()) + (f.annotation,):
            if isinstance(t, type) and issubclass(t, BaseModel):
                found += _fields_with_defaults(t, f"{prefix}{name}.")
    return found


def test_defaults_are_declared_once_in_the_tiny_profile():
    """The schema declares types and constraints only: every value is in profiles/tiny.yaml (paper overrides it),
    so no key has one value in the schema and another in a profile."""
    assert _fields_with_defaults(config.Params) == []
    load_profile("tiny")  # complete: validation would name any missing key


def test_a_missing_key_is_named_with_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config.paths, "PROFILES_DIR", tmp_path)
    text = (config.paths.ROOT / "profiles" / "tiny.yaml").read_text()
    (tmp_path / "tiny.yaml").write_text(text.replace("  prefilter: true", "  # prefilter removed"))
    with pytest.raises(ConfigError, match=r"crawl\.prefilter: Field required"):
        load_profile("tiny")


def test_trl_settings_are_checked_against_trl(tmp_path, monkeypatch):
    """train.* TRL dicts: an unknown key fails at load naming file:line (fast, from TRL's own source); a wrong type
    is caught by TRL's annotations; a key esvr sets itself is refused."""
    monkeypatch.setattr(config.paths, "PROFILES_DIR", tmp_path)
    (tmp_path / "tiny.yaml").write_text((config.paths.ROOT / "profiles" / "tiny.yaml").read_text())
    (tmp_path / "a.yaml").write_text("extends: tiny\ntrain:\n  tvd:\n    args:\n      learnin_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"a\.yaml:5: train\.tvd\.args\.learnin_rate: not a field of trl\.SFTConfig"):
        load_profile("a")
    (tmp_path / "b.yaml").write_text("extends: tiny\ntrain:\n  trainer:\n    seed: 3\n")
    with pytest.raises(ConfigError, match=r"train\.trainer\.seed: set by esvr"):
        load_profile("b")
    (tmp_path / "c.yaml").write_text("extends: tiny\ntrain:\n  rg_dpo:\n    args:\n      beta: strong\n")
    errors = config.trl_type_errors(load_profile("c"), [tmp_path / "tiny.yaml", tmp_path / "c.yaml"])
    assert any("train.rg_dpo.args.beta" in e and "c.yaml:5" in e for e in errors), errors
    assert config.trl_type_errors(load_profile("tiny"), [tmp_path / "tiny.yaml"]) == []
