"""Reading and writing problems and split membership."""

from __future__ import annotations

import polars as pl

from mixdistill.registry import Registry
from mixdistill.tasks import Problem
from mixdistill.tasks.base import PROBLEM_FIELDS


def save_problems(reg: Registry, task: str, split: str, problems: list[Problem], start: int = 0, *,
                  members_new: bool = False) -> tuple[int, int]:
    """Store a split's problems (or a chunk of them, the first at position `start`) in one transaction; returns (new
    problems, new split memberships). `members_new`: the caller found none of these memberships stored, so they are
    appended without looking the stored ones up (see `registry.keys`)."""
    rows = pl.DataFrame({name: [getattr(p, name) for p in problems] for name in PROBLEM_FIELDS})  # by column: 5x faster
    members = pl.DataFrame(
        {
            "task": [task] * len(problems),
            "split": [split] * len(problems),
            "problem_id": [p.problem_id for p in problems],
            "position": list(range(start, start + len(problems))),
        }
    )
    with reg.transaction():
        new = reg.insert("problems", rows)
        linked = reg.insert("problem_splits", members, on_conflict="new" if members_new else "nothing")
    return new, linked


def split_problems(reg: Registry, task: str, split: str) -> pl.DataFrame:
    """The stored problems of one split, in source order."""
    return reg.query(
        "SELECT p.* FROM problem_splits s JOIN problems p USING (problem_id)"
        " WHERE s.task = ? AND s.split = ? ORDER BY s.position",
        [task, split],
    )
