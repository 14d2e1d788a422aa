import json

import pytest

from tasks.domain import taxonomy


def test_twenty_categories_in_official_order(mirror):
    cats = json.loads((mirror / "touche23-valueeval" / "value-categories.json").read_text())
    assert list(cats) == list(taxonomy.VALUE_CATEGORIES)
    assert {k: tuple(v) for k, v in cats.items()} == taxonomy.LEVEL1
    header = (mirror / "touche23-valueeval" / "labels-training.tsv").read_text().splitlines()[0].split("\t")[1:]
    assert header == list(taxonomy.VALUE_CATEGORIES)


def test_positive_values_are_a_subset_in_order():
    pos = [v for v in taxonomy.VALUE_CATEGORIES if v in taxonomy.POSITIVE_VALUES]
    assert pos == list(taxonomy.POSITIVE_VALUES)
    assert sum(taxonomy.POSITIVE_MASK) == len(taxonomy.POSITIVE_VALUES) == 11
    assert "Security: personal" not in taxonomy.POSITIVE_VALUES


def test_validate_categories_names_the_place():
    with pytest.raises(ValueError, match="here: unknown"):
        taxonomy.validate_categories(["Hedonism", "Fun"], "here")


def test_strategies_are_esconvs_own(mirror):
    """tasks/domain/strategies.py declares the 8 strategies once; they are exactly ESConv's strategy.json."""
    from tasks.domain import strategies

    assert strategies.read_strategy_file(mirror / "esconv" / "strategy.json") == strategies.STRATEGIES
    assert strategies.normalise("[Question]") == "Question" and strategies.normalise("Questions") == "Question"
    assert strategies.normalise("other") == "Others" and strategies.normalise("Pep talk") is None
