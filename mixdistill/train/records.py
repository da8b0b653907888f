"""Registry records of training: one `runs` row per invocation, one `models` row per saved adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixdistill.ids import canonical_json
from mixdistill.recipe import TrainRecipe


def _open(registry_path: Path, read_only: bool = False):
    from mixdistill.registry import Registry  # imported on use: training without a registry needs no DuckDB

    return Registry.open(registry_path, read_only=read_only)


def recipe_json(recipe: TrainRecipe) -> str:
    return canonical_json(recipe.model_dump(mode="json"))


def start_run(registry_path: Path, recipe: TrainRecipe) -> str:
    """The training's `runs` row; the registry is opened only for this write (training must not hold its lock)."""
    from mixdistill.registry import runs

    with _open(registry_path) as reg:
        return runs.start_run(reg, "train", recipe.name, recipe)


def finish_run(registry_path: Path, run_id: str, error: str | None = None) -> None:
    from mixdistill.registry import runs

    with _open(registry_path) as reg:
        runs.finish_run(reg, run_id, "failed" if error else "done", error)


def register_model(
    registry_path: Path,
    *,
    model_id: str,
    run_id: str,
    recipe: TrainRecipe,
    base_revision: str | None,
    adapter_path: Path,
    corpus_id: str | None,
    metrics: dict[str, Any],
) -> str:
    """The adapter's `models` row; a resumed training replaces its own row (same model id, newest run and metrics)."""
    with _open(registry_path) as reg:
        reg.insert("models", [{
            "model_id": model_id, "run_id": run_id, "base_model": recipe.student, "base_revision": base_revision,
            "adapter_path": str(adapter_path.resolve()), "corpus_id": corpus_id, "recipe": recipe_json(recipe),
            "metrics": json.dumps(metrics, sort_keys=True),
        }], on_conflict="replace")
    return model_id


def find_model(registry_path: Path, key: str) -> dict[str, Any] | None:
    """A `models` row by model_id or by adapter path."""
    if not Path(registry_path).exists():
        return None
    with _open(registry_path, read_only=True) as reg:
        found = reg.query(
            "SELECT * FROM models WHERE model_id = ? OR adapter_path = ? ORDER BY created_at DESC LIMIT 1",
            [key, str(Path(key).resolve())],
        )
    return found.row(0, named=True) if found.height else None


def set_model_hub(registry_path: Path, model_id: str, repo: str, revision: str) -> None:
    with _open(registry_path) as reg:
        reg.con.execute("UPDATE models SET hub_repo = ?, hub_revision = ? WHERE model_id = ?", [repo, revision, model_id])
