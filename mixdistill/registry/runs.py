"""The `runs` table: one row per build, generation, verification, training or evaluation, from start to end.

Every stage records its runs the same way, so `SELECT kind, status, error FROM runs` answers "what ran, and what
failed" across the whole pipeline. Statuses: `running`, `done`, `stopped` (a budget), `failed` (with the reason),
`interrupted` (SIGINT / SIGTERM, or the process vanished: SIGKILL, power loss; found by its pid on the next open).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from contextlib import contextmanager
from typing import Iterator

from pydantic import BaseModel

from mixdistill.ids import canonical_json
from mixdistill.registry import Registry

INTERRUPTED = "interrupted"
HOST = socket.gethostname()
log = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """What `runs.error` says of a failure: "interrupted" for Ctrl-C / SIGTERM, else the type and the first line."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:2000] if first else type(exc).__name__


def start_run(reg: Registry, kind: str, name: str, recipe: BaseModel | None = None, run_id: str | None = None) -> str:
    run_id = run_id or f"{kind}-{uuid.uuid4().hex[:12]}"
    reg.insert("runs", [{
        "run_id": run_id, "kind": kind, "name": name, "status": "running",
        "recipe": canonical_json(recipe.model_dump(mode="json")) if recipe is not None else None,
        "pid": os.getpid(), "host": HOST,
    }])
    return run_id


def finish_run(reg: Registry, run_id: str, status: str = "done", error: str | None = None) -> None:
    if error == INTERRUPTED:  # callers pass ("failed", describe_error(exc)); a stop asked for is not a failure
        status = INTERRUPTED
    reg.execute(
        "UPDATE runs SET status = ?, error = ?, finished_at = current_timestamp WHERE run_id = ?",
        [status, error, run_id],
    )


@contextmanager
def tracked_run(reg: Registry, kind: str, name: str, recipe: BaseModel | None = None) -> Iterator[str]:
    """A run row that ends `done`, `interrupted` (Ctrl-C, SIGTERM) or `failed` with the reason when the block raises."""
    run_id = start_run(reg, kind, name, recipe)
    try:
        yield run_id
    except BaseException as exc:
        finish_run(reg, run_id, "failed", describe_error(exc))
        raise
    finish_run(reg, run_id)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_runs(reg: Registry) -> list[str]:
    """Runs still `running` whose process on this host is gone (runs of other hosts are left alone)."""
    rows = reg.con.execute(
        "SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ? AND pid IS NOT NULL", [HOST]
    ).fetchall()
    return [run_id for run_id, pid in rows if pid != os.getpid() and not pid_alive(pid)]


def close_stale_runs(reg: Registry) -> int:
    """Record the stale runs as `interrupted` (called whenever the registry is opened for writing)."""
    stale = stale_runs(reg)
    if stale:
        reg.execute(
            "UPDATE runs SET status = 'interrupted', error = 'process ended without finishing the run (killed?)', "
            f"finished_at = current_timestamp WHERE run_id IN ({', '.join('?' * len(stale))})",
            stale,
        )
        log.warning("%d run(s) left 'running' by a process that is gone now recorded as interrupted: %s",
                    len(stale), ", ".join(stale))
    return len(stale)


def status_counts(reg: Registry) -> list[tuple[str, int]]:
    """(status, runs), with stale `running` runs counted as `interrupted` (what a read-only open can show)."""
    from collections import Counter

    counts = Counter(dict(reg.con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()))
    stale = len(stale_runs(reg))
    if stale:
        counts["running"] -= stale
        counts[INTERRUPTED] += stale
    return sorted((status, n) for status, n in counts.items() if n)
