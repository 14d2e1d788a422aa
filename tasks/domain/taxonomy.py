"""The Touché23-ValueEval value taxonomy (Kiesel et al. 2022): 20 level-2 categories in the official column order,
their 54 level-1 values, and which categories count as *positive values* for a help seeker.

Positive values. ES-VR reinforces values that help a seeker move forward. We follow Schwartz et al. (2012): the
circle splits into *growth / anxiety-free* values (self-direction, stimulation, hedonism, universalism,
benevolence — pursued when people feel free of threat) and *self-protection / anxiety-avoidance* values (power,
face, security, tradition, conformity, humility). We count the growth values as positive, and add Achievement
because striving toward one's own goals is what ACT's value-directed action asks a client to name. Self-protection
values are not bad, but a seeker who voices mostly security or conformity is usually describing the threat, not
the way out. `POSITIVE_VALUES` is the single place this choice is made.
"""

from __future__ import annotations

VALUE_CATEGORIES: tuple[str, ...] = (
    "Self-direction: thought",
    "Self-direction: action",
    "Stimulation",
    "Hedonism",
    "Achievement",
    "Power: dominance",
    "Power: resources",
    "Face",
    "Security: personal",
    "Security: societal",
    "Tradition",
    "Conformity: rules",
    "Conformity: interpersonal",
    "Humility",
    "Benevolence: caring",
    "Benevolence: dependability",
    "Universalism: concern",
    "Universalism: nature",
    "Universalism: tolerance",
    "Universalism: objectivity",
)
N_VALUES = len(VALUE_CATEGORIES)
VALUE_INDEX = {v: i for i, v in enumerate(VALUE_CATEGORIES)}

#: Level-1 values under each category (names only; the dataset's value-categories.json adds example phrases).
LEVEL1: dict[str, tuple[str, ...]] = {
    "Self-direction: thought": ("Be creative", "Be curious", "Have freedom of thought"),
    "Self-direction: action": ("Be choosing own goals", "Be independent", "Have freedom of action", "Have privacy"),
    "Stimulation": ("Have an exciting life", "Have a varied life", "Be daring"),
    "Hedonism": ("Have pleasure",),
    "Achievement": ("Be ambitious", "Have success", "Be capable", "Be intellectual", "Be courageous"),
    "Power: dominance": ("Have influence", "Have the right to command"),
    "Power: resources": ("Have wealth",),
    "Face": ("Have social recognition", "Have a good reputation"),
    "Security: personal": ("Have a sense of belonging", "Have good health", "Have no debts", "Be neat and tidy",
                           "Have a comfortable life"),
    "Security: societal": ("Have a safe country", "Have a stable society"),
    "Tradition": ("Be respecting traditions", "Be holding religious faith"),
    "Conformity: rules": ("Be compliant", "Be self-disciplined", "Be behaving properly"),
    "Conformity: interpersonal": ("Be polite", "Be honoring elders"),
    "Humility": ("Be humble", "Have life accepted as is"),
    "Benevolence: caring": ("Be helpful", "Be honest", "Be forgiving", "Have the own family secured", "Be loving"),
    "Benevolence: dependability": ("Be responsible", "Have loyalty towards friends"),
    "Universalism: concern": ("Have equality", "Be just", "Have a world at peace"),
    "Universalism: nature": ("Be protecting the environment", "Have harmony with nature", "Have a world of beauty"),
    "Universalism: tolerance": ("Be broadminded", "Have the wisdom to accept others"),
    "Universalism: objectivity": ("Be logical", "Have an objective view"),
}

#: Growth-oriented categories (see module docstring), in official order.
POSITIVE_VALUES: tuple[str, ...] = (
    "Self-direction: thought",
    "Self-direction: action",
    "Stimulation",
    "Hedonism",
    "Achievement",
    "Benevolence: caring",
    "Benevolence: dependability",
    "Universalism: concern",
    "Universalism: nature",
    "Universalism: tolerance",
    "Universalism: objectivity",
)
POSITIVE_MASK: tuple[bool, ...] = tuple(v in POSITIVE_VALUES for v in VALUE_CATEGORIES)


def validate_categories(names: list[str] | tuple[str, ...], where: str = "") -> None:
    """Raise ValueError naming `where` if any name is not one of the 20 categories."""
    bad = [n for n in names if n not in VALUE_INDEX]
    if bad:
        raise ValueError(f"{where}: unknown value categories {bad}; expected names from tasks.domain.taxonomy.VALUE_CATEGORIES")
