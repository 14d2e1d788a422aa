"""sources: checksums are enforced and a missing mirror says how to fix it."""

from __future__ import annotations

import pytest

from tasks import sources


def test_manifest_covers_what_the_dag_needs():
    m = sources.load_manifest()
    assert {"touche23", "goemotions", "esconv", "seeker_personas", "pushshift_samples", "offmychest_threads"} <= set(m)
    for entry in m.values():
        for digest in entry["files"].values():
            assert len(digest) == 64


def test_missing_mirror_explains_the_fix(tmp_path):
    with pytest.raises(sources.SourceError, match="ESVR_MIRROR"):
        sources.run(["goemotions"], dest_root=tmp_path / "ext", mirror=tmp_path / "nowhere")


def test_stage_verifies_and_is_idempotent(mirror, tmp_path):
    rep = sources.run(["goemotions"], dest_root=tmp_path, mirror=mirror)
    assert rep["mirror"] == rep["files"] == 5
    assert sources.run(["goemotions"], dest_root=tmp_path, mirror=mirror)["present"] == 5
    assert (tmp_path / "MANIFEST.json").is_file()


def test_corrupt_mirror_file_is_refused(mirror, tmp_path):
    fake = tmp_path / "mirror" / "goemotions"
    fake.mkdir(parents=True)
    for f in sources.load_manifest()["goemotions"]["files"]:
        (fake / f).write_bytes((mirror / "goemotions" / f).read_bytes())
    (fake / "emotions.txt").write_text("tampered\n")
    with pytest.raises(sources.SourceError, match="emotions.txt: sha256"):
        sources.run(["goemotions"], dest_root=tmp_path / "ext", mirror=tmp_path / "mirror")
