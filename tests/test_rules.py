"""Named, versioned equivalence rules."""

from __future__ import annotations

import math

import pytest

from mixdistill.verify.rules import RULES, UnknownRule, get_rule

strict, pot, mv = get_rule("strict"), get_rule("pot-rounding"), get_rule("math-verify")


def test_registry_of_rules():
    assert set(RULES) == {"strict", "pot-rounding", "math-verify"}
    for rule in RULES.values():
        assert rule.name and rule.version
    assert mv.version.startswith("2+mv") and mv.version.endswith("+cot-stated")
    # the CoT reading is part of the version, so a verdict or eval row names it
    assert (strict.version, get_rule("strict", "expression").version) == ("2+cot-stated", "2+cot-expression")
    with pytest.raises(UnknownRule, match="pot-rounding"):
        get_rule("fuzzy")
    with pytest.raises(UnknownRule, match="stated, expression"):
        get_rule("strict", "loose")


class _FakeFloat(float):
    pass


@pytest.mark.parametrize("rule", [strict, pot, mv], ids=lambda r: r.name)
def test_only_exact_builtin_numbers_compare(rule):
    """bool and complex are not numbers for a numeric task; a float subclass is not taken at its word."""
    assert not rule.equal(True, 1.0)
    assert not rule.equal(False, 0.0)
    assert not rule.equal(complex(5, 0), 5.0)  # type: ignore[arg-type]
    assert not rule.equal(_FakeFloat(5.0), 5.0)
    assert rule.equal(5.0, 5.0) and rule.equal("5", 5.0)


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        (17.0, 17.0, True),
        (17.00005, 17.0, True),  # within 1e-4
        (17.0002, 17.0, False),
        (1_000_000_000.5, 1_000_000_000.0, True),  # relative 1e-6 for large numbers
        (1_000_002_000.0, 1_000_000_000.0, False),  # relative 2e-6
        ("1,234", 1234.0, True),
        ("3/4", 0.75, True),
        ("25%", 25.0, True),
        (1.98, 2.0, False),
        (None, 2.0, False),
        ("no number", 2.0, False),
        (math.nan, math.nan, False),
        (math.inf, math.inf, False),
        ("yes", True, True),
        ("no", True, False),
        (None, False, False),
        (True, "yes", True),
    ],
)
def test_strict(pred, gold, expected):
    assert strict.equal(pred, gold) is expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        (1.98, 2.0, True),  # the one GSM8K case where the PoT rule and strict differ: both rounded to 1 place
        (2.04, 2.0, True),
        (2.06, 2.0, False),
        (17, 17.0, True),
        (16.99999, 17.0, True),
        (0.33333, 0.3333333, True),  # 5 places
        (0.3334, 0.3333333, False),
        ("17", 17.0, True),  # written text keeps its own precision: "17" counts 5 places
        (3.14159, 3.14, True),
        (None, 1.0, False),
        (math.nan, 1.0, False),
        ("no", False, True),
    ],
)
def test_pot_rounding(pred, gold, expected):
    assert pot.equal(pred, gold) is expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("\\frac{1}{2}", "0.5", True),
        ("1/2", 0.5, True),
        ("$\\sqrt{4}$", 2.0, True),
        ("3", 4.0, False),
        (None, 1.0, False),
        ("yes", True, True),
    ],
)
def test_math_verify(pred, gold, expected):
    assert mv.equal(pred, gold) is expected
