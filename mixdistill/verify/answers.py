"""Final-answer extraction from chain-of-thought text, and numbers from the ways people write them.

Order of evidence, strongest first: `\\boxed{...}`, "The answer is ...", "Answer: ...", then the last number in the
text. A completion that runs on into a hallucinated next exemplar ("\\n\\nQ: ...") is cut there first, as the
distilling-step-by-step loader does, so the next exemplar's numbers never count.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from fractions import Fraction

# a number as written: -1,234.5 | 3/4 | .5 | 1e6 ; thousands separators only in groups of three
NUMBER_RE = re.compile(
    r"(?<![\w.])[-\u2212]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?"
)
_ANSWER_IS = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_CONTINUATION = re.compile(r"\n\s*(?:Q|Question)\s*:")
_YES = {"yes", "true", "correct"}
_NO = {"no", "false", "incorrect"}
_BOOL_WORD = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)


def strip_continuation(text: str) -> str:
    """The completion up to a hallucinated next exemplar ("Q:" or "Question:" starting a line)."""
    m = _CONTINUATION.search(text)
    return text[: m.start()] if m else text


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1].strip() if depth == 0 else None


def answer_segment(text: str) -> str | None:
    """The words after the last "The answer is" / "Answer:", up to the end of that sentence or line."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    end = re.search(r"\n|\.(?:\s|$)(?![\d])|$", rest)
    return rest[: end.start()].strip()


def parse_number(text: str) -> float | None:
    """The first number in `text`: commas, currency, units, percent and fractions allowed (`$1,234.50`, `3/4`,
    `25%`, `12 apples`). None when there is none."""
    for m in NUMBER_RE.finditer(text.replace("\u2212", "-")):
        token = m.group(0).replace("$", "").replace(" ", "").replace(",", "")
        if not any(ch.isdigit() for ch in token):
            continue
        try:
            if "/" in token:
                num, den = token.split("/")
                return float(Fraction(num) / Fraction(den)) if float(den) != 0 else None
            return float(token)
        except (ValueError, ZeroDivisionError, OverflowError):
            continue
    return None


def last_number(text: str) -> float | None:
    found = None
    for m in NUMBER_RE.finditer(text.replace("\u2212", "-")):
        if any(ch.isdigit() for ch in m.group(0)):
            found = m.group(0)
    return None if found is None else parse_number(found)


_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}


def evaluate_arithmetic(expr: str) -> float | None:
    """Value of a plain arithmetic expression such as `(45 - (-1))` or `10 * 45 / 2`, without `eval`: only numbers,
    + - * / // % ** and parentheses; small exponents only. None for anything else."""
    expr = expr.strip().replace("\u00d7", "*").replace("\u00f7", "/").replace("^", "**").replace(",", "")
    if not expr or len(expr) > 500:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError):
        return None

    def ev(node) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        raise ValueError("not arithmetic")

    try:
        value = float(ev(tree))
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return value if math.isfinite(value) else None


def number_from_segment(segment: str) -> float | None:
    """A number from the words that state an answer: the value after the last "=", an arithmetic expression's
    value ("(10 * 45)"), else the first number written there."""
    segment = segment.strip().rstrip(".").strip()
    if "=" in segment:
        segment = segment.rsplit("=", 1)[1]
    value = evaluate_arithmetic(segment)
    return value if value is not None else parse_number(segment)


def parse_bool(text: str) -> bool | None:
    m = _BOOL_WORD.search(text)
    if not m:
        return None
    return m.group(1).lower() in _YES


def format_number(value: float) -> str:
    """Canonical text for an extracted number: integers without ".0", others as Python's shortest repr."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def extract_cot_answer(text: str | None, answer_type: str = "number") -> str | None:
    """The final answer of a CoT completion, as canonical text ("450", "0.75", "yes"), or None when it states none.

    `answer_type` is the problem's: "number" or "bool" (StrategyQA's yes/no).
    """
    if not text or not text.strip():
        return None
    body = strip_continuation(text)
    if answer_type == "bool":
        for candidate in (last_boxed(body), answer_segment(body)):
            if candidate and (b := parse_bool(candidate)) is not None:
                return "yes" if b else "no"
        words = _BOOL_WORD.findall(body)
        return None if not words else ("yes" if words[-1].lower() in _YES else "no")
    boxed = last_boxed(body)
    if boxed is not None:
        value = number_from_segment(boxed.replace("\\frac{", "(").replace("}{", ")/(").replace("}", ")"))
        if value is not None:
            return format_number(value)
    segment = answer_segment(body)
    if segment:
        value = number_from_segment(segment)
        if value is not None:
            return format_number(value)
    value = last_number(body)
    return None if value is None else format_number(value)
