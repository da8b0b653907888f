"""Find the Python program in a model's PoT response: a fenced block, a `def solution()`, or plain code."""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_MAX_TRIM = 40  # prose lines dropped around plain code before giving up


def _is_program(code: str) -> bool:
    """Parses as Python and does something: assigns, defines, or calls (a lone word or sentence fragment does not)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(
        isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.FunctionDef, ast.Call, ast.For, ast.While))
        for node in ast.walk(tree)
    )


def _mentions_answer(code: str) -> bool:
    return bool(re.search(r"\bans\b|\bdef\s+solution\s*\(", code))


def extract_program(text: str | None) -> str | None:
    """The program in a PoT response, or None when there is no runnable code.

    Fenced blocks win (the first that sets `ans` or defines `solution`, else the first); otherwise the response is
    taken as code, trimming prose lines before and after it until it parses. A block that does not parse is still
    returned when it is the only candidate, so the sandbox reports its SyntaxError instead of it vanishing.
    """
    if not text or not text.strip():
        return None
    blocks = [b.strip("\n") for b in _FENCE.findall(text) if b.strip()]
    if blocks:
        return next((b for b in blocks if _mentions_answer(b) and _is_program(b)), blocks[0])
    lines = text.strip("\n").splitlines()
    if _is_program("\n".join(lines)):
        return "\n".join(lines)
    start = next((i for i, line in enumerate(lines) if re.match(r"\s*def\s+solution\s*\(", line)), None)
    if start is not None:  # prose before a solution(): keep the imports that precede it
        head = [ln for ln in lines[:start] if re.match(r"(?:from\s+\S+\s+)?import\s", ln)]
        lines = head + lines[start:]
    for cut in range(min(_MAX_TRIM, len(lines))):
        for lo, hi in ((cut, len(lines)), (0, len(lines) - cut), (cut, len(lines) - cut)):
            code = "\n".join(lines[lo:hi])
            if code.strip() and _is_program(code):
                return code
    return None
