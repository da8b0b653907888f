"""Small build recipes for teacher and generation tests: synthetic problems as a custom task, fake-server teachers."""

from __future__ import annotations

import json
from pathlib import Path

from mixdistill.recipe import BuildRecipe


def synthetic_task(tmp_path: Path, n: int, name: str = "synth") -> dict:
    """A custom task of `n` one-step addition problems (a TaskRef mapping)."""
    path = tmp_path / f"{name}.jsonl"
    rows = [{"id": f"p{i}", "question": f"Sam has {i} pens and finds {i + 3} more. How many pens does Sam have?",
             "answer": 2 * i + 3} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return {"custom": {"name": name, "path": str(path), "question": "question", "answer": "answer", "id": "id",
                       "license": "cc0-1.0"}}  # written here, so a corpus built from it can carry a license


def openai_teacher(srv, **kw) -> dict:
    return {"provider": "openai", "model": "gpt-4o-mini", "base_url": srv.base_url, "retry_backoff_s": 0.01, **kw}


def anthropic_teacher(srv, **kw) -> dict:
    return {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "base_url": srv.base_url,
            "retry_backoff_s": 0.01, **kw}


def recipe(tasks: list[dict], teachers: list[dict], **kw) -> BuildRecipe:
    return BuildRecipe.model_validate({"name": "test-build", "tasks": tasks, "teachers": teachers, **kw})
