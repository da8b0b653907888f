"""The `runs` table: one row per build, generation, verification, training or evaluation, from start to end.

Every stage records its runs the same way, so `SELECT kind, status, error FROM runs` answers "what ran, and what
failed" across the whole pipeline.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

from pydantic import BaseModel

from mixdistill.ids import canonical_json
from mixdistill.registry import Registry


def describe_error(exc: BaseException) -> str:
    """What `runs.error` says of a failure: "interrupted" for Ctrl-C, else the type and the first line."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:2000] if first else type(exc).__name__


def start_run(reg: Registry, kind: str, name: str, recipe: BaseModel | None = None, run_id: str | None = None) -> str:
    run_id = run_id or f"{kind}-{uuid.uuid4().hex[:12]}"
    reg.insert("runs", [{
        "run_id": run_id, "kind": kind, "name": name, "status": "running",
        "recipe": canonical_json(recipe.model_dump(mode="json")) if recipe is not None else None,
    }])
    return run_id


def finish_run(reg: Registry, run_id: str, status: str = "done", error: str | None = None) -> None:
    with reg.lock:
        reg.con.execute(
            "UPDATE runs SET status = ?, error = ?, finished_at = current_timestamp WHERE run_id = ?",
            [status, error, run_id],
        ).fetchall()


@contextmanager
def tracked_run(reg: Registry, kind: str, name: str, recipe: BaseModel | None = None) -> Iterator[str]:
    """A run row that ends `done`, or `failed` with the reason when the block raises (Ctrl-C included)."""
    run_id = start_run(reg, kind, name, recipe)
    try:
        yield run_id
    except BaseException as exc:
        finish_run(reg, run_id, "failed", describe_error(exc))
        raise
    finish_run(reg, run_id)
