"""CoT final-answer extraction and number parsing."""

from __future__ import annotations

import pytest

from mixdistill.verify.answers import evaluate_arithmetic, extract_cot_answer, parse_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("There are 15 trees. 21 - 15 = 6. The answer is 6.", "6"),
        ("So 3 + 4 = 7 cars. The answer is 7 cars.", "7"),
        ("The total is $1,234.50. The answer is $1,234.50.", "1234.5"),
        ("It rose by 25 percent, so the answer is 25%.", "25"),
        ("Each gets 3/4 of a pie. The answer is 3/4.", "0.75"),
        ("Half is 0.5. The answer is .5", "0.5"),
        ("It dropped to -12 degrees. The answer is -12.", "-12"),
        ("The answer is 1e3.", "1000"),
        ("We get \\boxed{42} in the end. (Not 41.)", "42"),
        ("So the result is $\\boxed{\\frac{3}{4}}$.", "0.75"),
        ("Nested: \\boxed{{12}}", "12"),
        ("She has 5 apples and buys 3 more, so she has 8", None),  # no statement: a last number is never taken
        ("Final answer: 96", "96"),
        ("**Answer:** 96", "96"),
        ("#### 1,234", "1234"),
        ("Therefore, the answer (arabic numerals) is 42.", "42"),
        ("Therefore, the answer (arabic numerals) is: it depends on the day, 3 or 4.", None),
        ("The answer is (10 * 45).", None),  # `stated`: 450 is never written; see test_cot_readings
        ("10 * 45 is 450. The answer is (10 * 45).", "450"),
        ("So 12 - 2 = 10 and 10 - 7 = 3. The answer is (12 - 2) - 7.", "3"),
        ("The answer is 10 + 5 = 15.", "15"),
        ("The answer is 3.5 hours.", "3.5"),
        ("It costs 1,000,000 dollars. The answer is 1,000,000 dollars.", "1000000"),
        ("It costs 1,000,000 dollars", None),
        # a hallucinated next exemplar after the answer never counts
        ("5 + 3 = 8. The answer is 8.\n\nQ: Tom has 99 pens.\nA: The answer is 99.", "8"),
        ("Nothing numeric here.", None),
        ("", None),
        (None, None),
    ],
)
def test_numbers(text, expected):
    assert extract_cot_answer(text, "number") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hamsters are prey animals. Thus, hamsters provide food. So the answer is yes.", "yes"),
        ("A pear sinks? No: pears float. So the answer is no.", "no"),
        ("The answer is: True.", "yes"),
        ("Yes, it can. But then... the answer is false", "no"),
        ("Hmm, I think no.", None),  # no statement
        ("\\boxed{yes}", "yes"),
        ("I cannot tell.", None),
        ("So the answer (Yes or No) is yes.", "yes"),
        # the qualifier's "No" is never the answer; a statement that commits to nothing is no answer
        ("So the answer (Yes or No) is: it is not known.", None),
        ("Therefore, the answer (Yes or No) is it depends.", None),
    ],
)
def test_booleans_for_strategyqa(text, expected):
    assert extract_cot_answer(text, "bool") == expected


def test_parse_number_forms():
    assert parse_number("$ 2,500") == 2500
    assert parse_number("about 12 apples") == 12
    assert parse_number("1 / 0") is None
    assert parse_number("12,34") == 12  # not a thousands group: the first number only
    assert parse_number("\u22125") == -5  # unicode minus


def test_evaluate_arithmetic_is_not_eval():
    assert evaluate_arithmetic("(45 - (-1))") == 46
    assert evaluate_arithmetic("2 ^ 3") == 8
    assert evaluate_arithmetic("7 // 2 + 7 % 2") == 4
    assert evaluate_arithmetic("__import__('os').system('true')") is None
    assert evaluate_arithmetic("9 ** 9 ** 9") is None  # refuses exponent bombs
    assert evaluate_arithmetic("1 / 0") is None
    assert evaluate_arithmetic("(29/2) and (30/2)") is None


@pytest.mark.parametrize(
    "text, stated, expression",
    [
        # the distilling-step-by-step form: the statement is an expression; `stated` needs its value written too
        ("91676 - 61619 = 1197 and so on. The answer is (91676 - 61619).", None, "30057"),
        ("10 * 45 is 450. The answer is (10 * 45).", "450", "450"),
        ("So 12 - 2 = 10 and 10 - 7 = 3. The answer is (12 - 2) - 7.", "3", "3"),
        ("The answer is (2).", "2", "2"),
        ("The answer is 10 + 5 = 15.", "15", "15"),  # the value after the last "=" is stated
        ("The answer is (some bags + 4 bags).", None, None),  # not arithmetic
    ],
)
def test_cot_readings(text, stated, expression):
    assert extract_cot_answer(text, "number", "stated") == stated
    assert extract_cot_answer(text, "number", "expression") == expression


def test_unknown_reading_is_refused():
    with pytest.raises(ValueError, match="unknown CoT reading"):
        extract_cot_answer("The answer is 1.", "number", "loose")
