"""The value-free rule (tasks/annotators/value_free.py) on hand-made rows: what each source keeps and drops."""

from __future__ import annotations

import pytest

from tasks.annotators import value_free


def _tsv(tmp_path, rows):
    p = tmp_path / "train.tsv"
    p.write_text("".join(f"{t}\t{lab}\tid{i}\n" for i, (t, lab) in enumerate(rows)), encoding="utf-8")
    return p


def test_goemotions_neutral_keeps_impersonal_statements_only(tmp_path):
    keep = "No usable cure was found for TB until 1945 in most of the world."
    rows = [(keep, "27"),
            ("The train leaves at nine and arrives shortly after noon today.", "27,4"),  # not neutral only
            ("You should really call the landlord about the broken heating.", "27"),  # second person, obligation
            ("We finally moved the whole office to the new building downtown.", "27"),  # first person
            ("Did the train leave at nine or at ten this morning then?", "27"),  # a question
            ("[NAME] moved the whole office to the new building downtown.", "27"),  # placeholder
            ("Short neutral one.", "27"),  # not longer than short_max_words
            (" ".join(["word"] * 41), "27")]  # longer than max_words
    assert value_free.read_goemotions_neutral(_tsv(tmp_path, rows), 7, 40) == [keep]


def test_goemotions_neutral_names_the_bad_line(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text("a fine line with enough words in it here\t27\tx\nno label column\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.tsv:2: expected text<TAB>labels"):
        value_free.read_goemotions_neutral(p, 1, 40)


def test_pool_drops_value_names_probes_and_duplicates_per_source():
    texts = {"goemotions_neutral": ["The museum reopened after the renovation in the spring.",
                                    "The museum reopened after the renovation in the spring!",  # same normalised form
                                    "Their freedom was restored after the long trial ended.",  # names a value
                                    "hi"],  # a probe
             "claff_routine": ["Hotel with AC for $30 per night."]}
    pool = value_free.build_pool(texts, exclude=["hi"], seed=1, n_train=1, n_choose=1, n_report=5)
    c = pool.counts
    assert (c["goemotions_neutral.kept"], c["goemotions_neutral.duplicate"], c["goemotions_neutral.names_a_value"],
            c["goemotions_neutral.probe_or_empty"]) == (1, 1, 1, 1)
    assert c["pool"] == 2 and len(pool.train) == 1 and len(pool.choose) == 1 and pool.report == []
    with pytest.raises(ValueError, match="unknown value-free source"):
        value_free.build_pool({"esconv": ["x"]}, [], 1, 1, 1, 1)
