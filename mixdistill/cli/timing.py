"""The environment of the `mixdistill` processes that benchmarks time whole (`bench teachers`, `bench startup`).

An installed mixdistill has every module compiled to bytecode (pip compiles at install). A source checkout run with
bytecode writing off (`PYTHONDONTWRITEBYTECODE`, which many containers set) compiles every module it imports at each
start instead: 0.1-0.15 s of a short command on the 2-core machine, a cost no user of an installed copy pays. So a
timed process reads its bytecode from a cache of the benchmark's own (`PYTHONPYCACHEPREFIX` in its temporary folder),
which an untimed run of the same command fills first. The user's setting and folders are left as they are.
"""

from __future__ import annotations

import os
from pathlib import Path


def timed_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This process's environment, plus `extra`, with bytecode read from and written to `tmp`/pycache."""
    env = {**os.environ, **extra, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
