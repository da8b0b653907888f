"""Shards: a deterministic partition of problems, so a build can be split across machines by an existing scheduler.

A shard is written `I/N` (0 <= I < N): shard I holds the problems whose id hashes to I modulo N. The hash is of the
problem id alone, so a problem lands in the same shard whatever split, teacher or mode it is asked in, and every
sample of a problem is in one shard (the mix's per-problem balance then needs no cross-shard step). Slurm array task
ids and Ray task indices map onto I directly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mixdistill.errors import MixdistillError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, spec: str) -> "Shard":
        """`"2/8"` -> Shard(2, 8); anything else is one line saying what a shard spec looks like."""
        m = _SPEC.match(spec or "")
        if not m:
            raise MixdistillError(f"--shard {spec!r}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1:
            raise MixdistillError(f"--shard {spec!r}: the number of shards N must be at least 1")
        if index >= count:
            raise MixdistillError(f"--shard {spec!r}: the shard index I must be below N (0..{count - 1})")
        return cls(index, count)

    def holds(self, problem_id: str) -> bool:
        return shard_of(problem_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(problem_id: str, count: int) -> int:
    """The shard (0..count-1) a problem belongs to; stable across machines, Python versions and runs."""
    digest = hashlib.sha256(problem_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count
