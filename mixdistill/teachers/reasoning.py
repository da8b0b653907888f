"""What reasoning each model family takes, and how a reasoning trace is split from the final answer.

The family tables are written by hand because no library keeps them: OpenAI reasoning models (o1, o3, o4-mini,
gpt-5...) take `reasoning_effort` and reject sampling parameters; Anthropic models take extended thinking with a token
budget from Claude 3.7 Sonnet, adaptive thinking with an effort level from Claude 4.6, and only the latter from Opus
4.7. An unrecognised model id is treated as the provider's newest family (a new model is more likely than an old one).
"""

from __future__ import annotations

import re
from typing import Literal

Thinking = Literal["none", "budget", "both", "effort"]

_OPENAI_REASONING = re.compile(r"^(?:ft:)?(?:o\d|gpt-5|gpt-oss)(?:$|[-.:])")
_CLAUDE = re.compile(r"^claude-(?:(\d+)-(\d+)-(opus|sonnet|haiku)|(\d+)-(opus|sonnet|haiku)|(opus|sonnet|haiku)-(\d+)(?:-(\d+))?)")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def openai_reasoning_model(model: str) -> bool:
    """True for OpenAI's reasoning families, which take `reasoning_effort` and refuse temperature/top_p."""
    return bool(_OPENAI_REASONING.match(model))


def claude_version(model: str) -> tuple[str, int, int] | None:
    """(family, major, minor) of a Claude model id (`claude-3-7-sonnet-...`, `claude-sonnet-4-5`, `claude-opus-4-20250514`)."""
    m = _CLAUDE.match(model)
    if not m:
        return None
    if m.group(1):
        return m.group(3), int(m.group(1)), int(m.group(2))
    if m.group(4):
        return m.group(5), int(m.group(4)), 0
    minor = m.group(8)
    return m.group(6), int(m.group(7)), int(minor) if minor and len(minor) <= 2 else 0  # a date is not a minor version


def anthropic_thinking(model: str) -> Thinking:
    """Which thinking settings a Claude model takes: none, a budget, both, or an effort level only."""
    version = claude_version(model)
    if version is None:
        return "effort"
    family, major, minor = version
    if (major, minor) < (3, 7):
        return "none"
    if (major, minor) < (4, 6):
        return "budget"
    if family == "opus" and (major, minor) >= (4, 7) or major >= 5:
        return "effort"
    return "both"


def split_think(text: str) -> tuple[str | None, str]:
    """`<think>...</think>` blocks (DeepSeek-R1 distills, Qwen3) -> (trace, final answer).

    A lone `</think>` counts too: chat templates that open the block in the prompt leave only its end in the output.
    No block: (None, text unchanged)."""
    if "</think>" not in text:
        return None, text
    traces = [t.strip() for t in _THINK.findall(text)]
    rest = _THINK.sub("", text)
    if "</think>" in rest:  # an unopened block ends the trace
        head, rest = rest.split("</think>", 1)
        traces.insert(0, head.strip())
    return "\n\n".join(t for t in traces if t), rest.strip()
