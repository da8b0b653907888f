"""Named, versioned answer-equivalence rules. Every verdict stores the rule's name and version, so changing a rule
(bump its version) re-verifies without re-generating. A rule's version also covers the CoT answer extraction that
feeds it: a change in `answers` that can alter what is extracted bumps the versions here. (A PoT verdict follows the
sandbox version on its own: programs from an older sandbox run again.)

- `strict`: |a - b| <= 1e-4, or relative difference <= 1e-6 (large numbers); booleans must match.
- `pot-rounding`: the Program-of-Thoughts repo's `finqa_equal`: both numbers rounded to the smaller number of decimal
  places in their `str()`, a value without "." counting as 5 places; lets its published accuracies be reproduced.
- `math-verify`: Hugging Face math-verify, for answers that are expressions (fractions, LaTeX, symbolic forms).

Each rule is also configured with the CoT *reading* (`stated` or `expression`, see `answers`), which enters its
version: `strict` at revision 2 read `stated` is version `2+cot-stated`, so verdicts and eval rows name the reading.
Revision 2 (all rules): CoT extraction commits or abstains; only exact builtin numbers compare (never bool).
Opt-in PoT answer conventions beyond `ans` / `solution()` (`POT_CONVENTIONS`) enter the version too:
`2+cot-stated+pot-first-of-tuple+printed`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Protocol

from mixdistill.errors import MixdistillError
from mixdistill.verify.answers import COT_READINGS, parse_bool, parse_number

Value = str | float | int | bool | None


POT_CONVENTIONS = ("first-of-tuple", "printed")


class UnknownRule(MixdistillError):
    """A rule name that is not registered."""


class Rule(Protocol):
    name: str
    version: str  # revision + the CoT reading (+ PoT conventions)
    cot_reading: str
    pot_conventions: tuple[str, ...]

    def equal(self, pred: Value, gold: Value) -> bool: ...


def as_number(value: Value) -> float | None:
    """A float from a stored answer: numbers pass through, text is parsed ("1,234", "3/4", "25%"); booleans and
    unparseable text give None."""
    if type(value) in (int, float):
        return float(value)
    if type(value) is str:
        return parse_number(value)
    return None  # bool, complex and any other object are not numbers


def as_bool(value: Value) -> bool | None:
    if type(value) is bool or value is None:
        return value
    if type(value) is str:
        return parse_bool(value)
    return None


def _booleans(pred: Value, gold: Value) -> tuple[bool | None, bool] | None:
    """When gold is a boolean: (pred as bool, gold). Else None."""
    if type(gold) is bool or (type(gold) is str and gold.strip().lower() in {"yes", "no", "true", "false"}):
        return as_bool(pred), bool(as_bool(gold))
    return None


@dataclass(frozen=True)
class _Versioned:
    @property
    def version(self) -> str:
        pot = f"+pot-{'+'.join(self.pot_conventions)}" if self.pot_conventions else ""
        return f"{self.revision}+cot-{self.cot_reading}{pot}"


@dataclass(frozen=True)
class StrictRule(_Versioned):
    name: str = "strict"
    revision: str = "2"
    cot_reading: str = "stated"
    pot_conventions: tuple[str, ...] = ()
    abs_tol: float = 1e-4
    rel_tol: float = 1e-6

    def equal(self, pred: Value, gold: Value) -> bool:
        if (pair := _booleans(pred, gold)) is not None:
            return pair[0] is not None and pair[0] == pair[1]
        a, b = as_number(pred), as_number(gold)
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            return False
        diff = abs(a - b)
        return diff <= self.abs_tol or diff <= self.rel_tol * max(abs(a), abs(b))


def _decimal_places(text: str) -> int:
    return len(text.rsplit(".", 1)[1]) if "." in text else 5


def _pot_text(value: Value) -> str | None:
    """The `str()` the PoT rule counts decimals in: a number's own str(), or the number as written in text
    ("17" counts 5 places, like the int 17 would)."""
    if type(value) in (int, float):
        return str(value)
    if type(value) is str:
        number = as_number(value)
        if number is None:
            return None
        literal = value.strip().replace(",", "")
        try:
            float(literal)
            return literal
        except ValueError:
            return str(number)
    return None


@dataclass(frozen=True)
class PotRoundingRule(_Versioned):
    name: str = "pot-rounding"
    revision: str = "2"
    cot_reading: str = "stated"
    pot_conventions: tuple[str, ...] = ()

    def equal(self, pred: Value, gold: Value) -> bool:
        if (pair := _booleans(pred, gold)) is not None:
            return pair[0] is not None and pair[0] == pair[1]
        tp, tg = _pot_text(pred), _pot_text(gold)
        if tp is None or tg is None:
            return False
        a, b = float(tp), float(tg)
        if not (math.isfinite(a) and math.isfinite(b)):
            return False
        places = min(_decimal_places(tp), _decimal_places(tg))
        return round(a, places) == round(b, places)


@functools.cache
def _math_verify_version() -> str:
    """Read when a verdict needs it, not at import: `importlib.metadata` costs 0.05-0.1 s of every command's start."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("math-verify")
    except PackageNotFoundError:
        return "absent"


@dataclass(frozen=True)
class MathVerifyRule(_Versioned):
    """Its version includes the library's: a math-verify upgrade can change verdicts, so it re-verifies."""

    name: str = "math-verify"
    cot_reading: str = "stated"
    pot_conventions: tuple[str, ...] = ()

    @property
    def revision(self) -> str:
        return f"2+mv{_math_verify_version()}"

    def equal(self, pred: Value, gold: Value) -> bool:
        if (pair := _booleans(pred, gold)) is not None:
            return pair[0] is not None and pair[0] == pair[1]
        if type(pred) not in (int, float, str) or type(gold) not in (int, float, str):
            return False  # None, bool, complex, any other object
        from math_verify import parse, verify

        parsed_gold, parsed_pred = parse(_latexish(gold)), parse(_latexish(pred))
        if not parsed_gold or not parsed_pred:
            return False
        return bool(verify(parsed_gold, parsed_pred))


def _latexish(value: Value) -> str:
    """math-verify looks for math in text; a bare number or expression is wrapped so it is read as one."""
    text = repr(float(value)) if type(value) in (int, float) else str(value)
    return text if "$" in text or "\\" in text else f"${text}$"


RULES: dict[str, Rule] = {r.name: r for r in (StrictRule(), PotRoundingRule(), MathVerifyRule())}


def get_rule(name: str, cot_reading: str = "stated", pot_conventions=()) -> Rule:
    """A rule by name, configured with a CoT reading (`stated` or `expression`) and opt-in PoT conventions."""
    try:
        rule = RULES[name]
    except KeyError:
        raise UnknownRule(f"unknown rule {name!r}; rules: {', '.join(RULES)}") from None
    if cot_reading not in COT_READINGS:
        raise UnknownRule(f"unknown CoT reading {cot_reading!r}; readings: {', '.join(COT_READINGS)}")
    for c in pot_conventions:
        if c not in POT_CONVENTIONS:
            raise UnknownRule(f"unknown PoT answer convention {c!r}; conventions: {', '.join(POT_CONVENTIONS)}")
    return replace(rule, cot_reading=cot_reading, pot_conventions=tuple(sorted(set(pot_conventions))))
