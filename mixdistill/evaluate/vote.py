"""Voting over reasoning paths (self-consistency), as pure functions.

A path is one sampled rationale reduced to its final answer (`PathAnswer`): canonical answer text, or None when it
gave none (no answer stated, a program that crashed, timed out or returned a non-number). Paths without an answer
never vote.

- Within one mode (CoT or PoT): majority of the answers.
- MD (Mixed Distillation's multi-path vote): all CoT and PoT paths pooled; a path's vote counts its mode's weight
  (1 each by default, so a plain majority over both modes).
- Ties: the tied answer met first in the *pooled order* wins. The pooled order lists the paths mode by mode in the
  `tie_break` order (default PoT before CoT: an executed program is the more reliable path) and, within a mode, by
  sample index (sample 0 is the greedy path when k = 1). The result is deterministic for a given set of paths.

Answers are compared by a vote key: numbers rounded to 6 decimals (so that 0.30000000000000004 and 0.3 are one
answer), yes/no as text. The winner is then judged against gold with the recipe's answer rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mixdistill.verify.answers import format_number
from mixdistill.verify.rules import as_number

DEFAULT_ORDER = ("pot", "cot")


@dataclass(frozen=True)
class PathAnswer:
    mode: str  # cot | pot
    sample_index: int
    answer: str | None  # canonical answer text ("450", "0.75", "yes"), None: the path gave no usable answer


@dataclass(frozen=True)
class Vote:
    answer: str | None  # the winning answer's text (as the first path that gave it wrote it), None: no path answered
    votes: float  # its (weighted) vote count
    total: float  # (weighted) votes cast by paths with an answer
    tied: bool  # another answer had as many votes: the pooled order decided
    counts: Mapping[str, float] = field(default_factory=dict)  # vote key -> (weighted) votes
    leaders: tuple[str, ...] = ()  # every answer with the top count, in pooled order (the winner first)


def vote_key(answer: str) -> str:
    """What makes two answers the same vote: numbers rounded to 6 decimals, anything else lower-cased text."""
    number = as_number(answer) if answer.strip().lower() not in ("yes", "no", "true", "false") else None
    if number is not None:
        return format_number(round(number, 6) + 0.0)  # + 0.0: -0.0 and 0.0 are one answer
    return answer.strip().lower()


def pooled_order(paths: Iterable[PathAnswer], order: Sequence[str] = DEFAULT_ORDER) -> list[PathAnswer]:
    """Paths mode by mode in `order`, then by sample index: the order ties are broken in."""
    rank = {m: i for i, m in enumerate(order)}
    return sorted(paths, key=lambda p: (rank.get(p.mode, len(rank)), p.sample_index))


def vote(
    paths: Iterable[PathAnswer],
    weights: Mapping[str, float] | None = None,
    order: Sequence[str] = DEFAULT_ORDER,
) -> Vote:
    """The (weighted) majority answer of `paths`; ties go to the answer met first in the pooled order.

    A mode with weight 0 does not vote. With one mode's paths this is the plain within-mode majority.
    """
    counts: dict[str, float] = {}
    first: dict[str, tuple[int, str]] = {}  # key -> (position in pooled order, answer text as written)
    for position, p in enumerate(pooled_order(paths, order)):
        w = 1.0 if weights is None else float(weights.get(p.mode, 0.0))
        if p.answer is None or w <= 0:
            continue
        key = vote_key(p.answer)
        counts[key] = counts.get(key, 0.0) + w
        first.setdefault(key, (position, p.answer))
    if not counts:
        return Vote(None, 0.0, 0.0, False, {})
    best = max(counts.values())
    leaders = [k for k, c in counts.items() if best - c <= 1e-9 * best]  # float sums of weights
    leaders.sort(key=lambda k: first[k][0])
    return Vote(first[leaders[0]][1], best, sum(counts.values()), len(leaders) > 1, counts,
                tuple(first[k][1] for k in leaders))
