"""What a sandboxed program produced, read on the host from bytes the program could have forged.

Everything a child writes is untrusted: its result is accepted only as one flat JSON object of bounded size whose
values are short strings, small numbers or null (no nesting, so no recursion; integer literals of bounded length),
with a known status. The number judged is derived here from the answer's text and its exact kind, so it is always
the number the stored text states; no method a program could patch is involved. What cannot be read is `crashed`,
with the reason.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Literal

Status = Literal["ok", "error", "timeout", "memory", "forbidden", "no-answer", "crashed"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "forbidden", "no-answer", "crashed")
NUMERIC_KINDS = ("int", "float", "fraction", "decimal")
_CHILD_STATUSES = {"ok", "error", "memory", "forbidden", "no-answer"}
_KEYS = {"status", "answer", "answer_kind", "stdout_head", "error_class", "error_message", "runtime_s", "printed",
         "first_answer", "first_kind"}
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_INT = re.compile(r"-?\d{1,4400}")
_BIG_INT = re.compile(r"(-?)<int with \d+ bits>")
_FRACTION = re.compile(r"(-?\d{1,4400})/(\d{1,4400})")


@dataclass(frozen=True)
class ExecResult:
    """What running one program produced. `answer` is the text of `ans` (or `solution()`'s return); `answer_number`
    is set only for numeric answers of an exact numeric class (int, float, Fraction, Decimal, numpy and sympy
    numbers; never bool or complex), NaN and inf included: an int beyond float range is inf."""

    status: Status
    answer: str | None = None
    answer_number: float | None = None
    answer_kind: str | None = None  # number | bool | str | list | tuple | dict | set | complex | expression | object
    stdout_head: str = ""
    error_class: str | None = None
    error_message: str | None = None
    runtime_s: float = 0.0
    printed: str | None = None  # the last line printed (the opt-in `printed` convention reads it)
    first_answer: str | None = None  # a tuple answer's first element (the opt-in `first-of-tuple` convention)
    first_number: float | None = None

    def to_row(self) -> dict:
        row = asdict(self)
        row.pop("answer_kind")
        return row


def crashed(reason: str, runtime_s: float = 0.0) -> ExecResult:
    return ExecResult("crashed", error_class="Crash", error_message=reason, runtime_s=runtime_s)


def signal_name(sig: int) -> str:
    """A name for any signal number, real-time ones included (never raises)."""
    if signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
        return f"SIGRTMIN+{sig - signal.SIGRTMIN}"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def number_of(text: str, kind: str) -> float | None:
    """The number an answer's text states, for the exact numeric kinds the child reports; None otherwise."""
    try:
        if kind == "int":
            if m := _BIG_INT.fullmatch(text):
                return -math.inf if m.group(1) else math.inf
            if _INT.fullmatch(text):
                value = int(text)
                try:
                    return float(value)
                except OverflowError:
                    return math.inf if value > 0 else -math.inf
        elif kind == "float" and len(text) < 40:
            return float(text)
        elif kind == "fraction" and (m := _FRACTION.fullmatch(text)):
            num, den = int(m.group(1)), int(m.group(2))
            if den == 0:
                return None
            try:
                return num / den
            except OverflowError:
                return math.inf if num > 0 else -math.inf
        elif kind == "decimal" and len(text) < 200:
            return float(Decimal(text))
    except (ValueError, ArithmeticError, InvalidOperation):
        return None
    return None


def _flat_object(data: bytes) -> dict | None:
    """`data` parsed as one flat JSON object of short values, or None. The shape is checked before parsing."""
    if not data.startswith(b"{") or not data.endswith(b"}"):
        return None
    bare = _STRING.sub(b'""', data)
    if bare.count(b"{") != 1 or bare.count(b"}") != 1 or b"[" in bare:
        return None
    try:
        obj = json.loads(data.decode("ascii"), parse_int=lambda s: int(s) if len(s) <= 30 else None)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and set(obj) <= _KEYS else None


def _text(value, limit: int) -> str | None:
    return value[:limit].encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else None


def read_result(data: bytes, wait_status: int, wall_s: float, cpu_s: float) -> ExecResult:
    """A child's result from the bytes it wrote (after the zygote's read mark) and how it ended."""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig in (signal.SIGPROF, signal.SIGXCPU, signal.SIGKILL):
            return ExecResult("timeout", error_class="Timeout", error_message=f"CPU time limit {cpu_s}s exceeded",
                              runtime_s=wall_s)
        if sig == signal.SIGSYS:
            return ExecResult("forbidden", error_class="Forbidden", error_message="blocked system call",
                              runtime_s=wall_s)
        return crashed(f"killed by {signal_name(sig)}", wall_s)
    if not data:
        code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
        return ExecResult("error", error_class="EarlyExit", error_message=f"program exited (code {code}) without a result",
                          runtime_s=wall_s)
    res = _flat_object(data)
    if res is None or res.get("status") not in _CHILD_STATUSES:
        return crashed(f"unreadable result ({len(data)} bytes; forged or corrupted by the program)", wall_s)
    answer, kind = _text(res.get("answer"), 1000), _text(res.get("answer_kind"), 20)
    if res["status"] == "ok" and answer is None:
        res["status"] = "no-answer"
    number = number_of(answer, kind) if answer is not None and kind in NUMERIC_KINDS else None
    runtime = res.get("runtime_s")
    runtime = float(runtime) if type(runtime) in (int, float) and 0 <= runtime <= wall_s else wall_s
    first, first_kind = _text(res.get("first_answer"), 1000), _text(res.get("first_kind"), 20)
    first_number = number_of(first, first_kind) if first is not None and first_kind in NUMERIC_KINDS else None
    ok = res["status"] == "ok"
    return ExecResult(
        status=res["status"],
        answer=answer if res["status"] == "ok" else None,
        answer_number=number if res["status"] == "ok" else None,
        answer_kind=("number" if kind in NUMERIC_KINDS else kind) if res["status"] == "ok" else None,
        stdout_head=_text(res.get("stdout_head"), 100_000) or "",
        error_class=_text(res.get("error_class"), 200),
        error_message=_text(res.get("error_message"), 1000),
        runtime_s=runtime,
        printed=_text(res.get("printed"), 200) if res["status"] in ("ok", "no-answer") else None,
        first_answer=first if ok else None,
        first_number=first_number if ok else None,
    )
