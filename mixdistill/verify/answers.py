"""Final-answer extraction from chain-of-thought text: a text commits to an answer or abstains (None).

The rule (README, "CoT answer rule"), in order:
1. A completion that runs on into a hallucinated next exemplar ("\\nQ: ..." / "\\nQuestion: ...") is cut there, as
   the distilling-step-by-step loader does, so the next exemplar's words never count.
2. The statement of the answer, strongest first: the last `\\boxed{...}`; the last "#### ..." line; the last answer
   phrase ("the answer is", "final answer:", "**Answer:**", "Answer:" and the like, with an optional qualifier in
   parentheses between "answer" and its verb: "Therefore, the answer (arabic numerals) is 42",
   "So the answer (Yes or No) is yes"). The qualifier is never read as the answer. No statement: None (`no-answer`);
   a last number or a yes/no word elsewhere in the text is never taken.
3. What the statement says, read from its start (up to the end of its sentence or line): yes/no tasks need a yes/no
   word (yes, no, true, false) as its first word; numeric tasks need a number or an arithmetic expression first
   (after optional "$", "**", or "about"/"approximately"), and `a = b = 42` counts its last value. Anything else is
   None: "the answer is not known", "it depends".
4. An arithmetic expression as the answer ("The answer is (91676 - 61619).") is read by the named CoT *reading*:
   `stated` (default) takes its value only when the text also writes that value as a number, else None; `expression`
   evaluates it (right for equation-labelled data such as distilling-step-by-step's SVAMP labels).
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
_ANSWER_IS = re.compile(
    r"(?<![A-Za-z])(?:final\s+answer|answer)(?:\s*\([^()\n]{0,40}\))?\s*(?:\*\*|__)?\s*"
    r"(?:is\b|would\s+be\b|will\s+be\b|:|=)\s*:?\s*(?:\*\*|__)?",
    re.IGNORECASE,
)
_HASHES = re.compile(r"^\s*####\s*(.*)$", re.MULTILINE)
_LEAD = re.compile(r"^(?:\s|\*|_|`|\$|\\\(|:|=|\b(?:about|approximately|around|roughly|exactly)\b)*", re.IGNORECASE)
_EXPRESSION_HEAD = re.compile(r"[-+*/×÷^().\d\s,]+")
_OPERATOR_NEXT = re.compile(r"\s*[-+*/×÷^]\s*[\d(.]")
_PLAIN_PARENS = re.compile(r"\((-?\d+(?:\.\d+)?)\)")
_CONTINUATION = re.compile(r"\n\s*(?:Q|Question)\s*:")
COT_READINGS = ("stated", "expression")  # the CoT reading (rule step 4); mixdistill.recipe.CotReading
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
    """The words after the last answer phrase, up to the end of that sentence or line."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    return _sentence(text[matches[-1].end() :])


def _sentence(rest: str) -> str:
    end = re.search(r"\n|\.(?:\s|$)(?![\d])|$", rest)
    return rest[: end.start()].strip()


def answer_statement(text: str) -> str | None:
    """Where the text states its answer (rule step 2): the last boxed content, the last "####" line, or the words
    after the last answer phrase. None when it states none."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.replace("\\frac{", "(").replace("}{", ")/(").replace("}", ")").replace("{", "(")
    hashes = _HASHES.findall(text)
    if hashes:
        return _sentence(hashes[-1])
    return answer_segment(text)


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


def _numbers_written(text: str) -> list[float]:
    out = []
    for m in NUMBER_RE.finditer(text.replace("\u2212", "-")):
        if any(ch.isdigit() for ch in m.group(0)) and (v := parse_number(m.group(0))) is not None:
            out.append(v)
    return out


def number_from_segment(segment: str, reading: str = "expression", text: str = "") -> float | None:
    """The number an answer statement gives (rule step 3-4): the value after its last "=", else a number or an
    arithmetic expression at its start. An expression that is more than one number is read by `reading`: evaluated
    (`expression`), or accepted only when `text` also writes its value as a number (`stated`)."""
    segment = _LEAD.sub("", segment.strip()).rstrip(".").strip()
    if "=" in segment:
        segment = _LEAD.sub("", segment.rsplit("=", 1)[1]).strip()
    segment = _PLAIN_PARENS.sub(r"\1", segment.replace("$", "")).strip()
    number = NUMBER_RE.match(segment)
    after = segment[number.end() :] if number and number.group(0).strip() else None
    if after is not None and not _OPERATOR_NEXT.match(after):  # one number: 3/4, 1,234, 1e3, 25% included
        return parse_number(number.group(0))
    head = _EXPRESSION_HEAD.match(segment)
    value = evaluate_arithmetic(head.group(0).strip().rstrip(",")) if head else None
    if value is None:
        return None
    if reading == "expression":
        return value
    written = _numbers_written(text.replace(head.group(0).strip(), " "))
    return value if any(abs(v - value) <= 1e-9 * max(1.0, abs(value)) for v in written) else None


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


def extract_cot_answer(text: str | None, answer_type: str = "number", reading: str = "stated") -> str | None:
    """The final answer a CoT completion states, as canonical text ("450", "0.75", "yes"), or None when it states
    none (module docstring: the rule). `answer_type` is the problem's: "number" or "bool" (StrategyQA's yes/no)."""
    if reading not in COT_READINGS:
        raise ValueError(f"unknown CoT reading {reading!r}; readings: {', '.join(COT_READINGS)}")
    if not text or not text.strip():
        return None
    body = strip_continuation(text)
    statement = answer_statement(body)
    if statement is None:
        return None
    if answer_type == "bool":
        first = re.match(r"[\s*_`\"'(:]*([A-Za-z]+)", statement)
        word = first.group(1).lower() if first else ""
        return "yes" if word in _YES else "no" if word in _NO else None
    value = number_from_segment(statement, reading, body)
    return None if value is None else format_number(value)
