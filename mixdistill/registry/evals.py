"""Reading stored evaluation summaries (`evals`): the newest result of each (model, task, split, mode, k, rule), for
the comparison report (`evaluate.report`) and for model cards (`train.publish`), which both sit above this floor.

The newest summary wins when the same (model, task, split, mode, k, rule) was evaluated more than once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from mixdistill.registry import Registry

_LATEST = """
SELECT e.*, json_extract_string(e.summary, '$.label') AS label,
       TRY_CAST(json_extract(e.summary, '$.ties') AS INTEGER) AS ties,
       TRY_CAST(json_extract(e.summary, '$.ties_lost') AS INTEGER) AS ties_lost
FROM evals e
WHERE e.accuracy IS NOT NULL {where}
QUALIFY row_number() OVER (PARTITION BY e.model, e.task, e.split, e.mode, e.k, e.rule ORDER BY e.created_at DESC) = 1
ORDER BY e.task, e.split, e.model, e.mode, e.k
"""
MODE_NAMES = {"cot": "CoT", "pot": "PoT", "md": "MD vote"}


def mode_label(mode: str, k: int) -> str:
    """`CoT` (single greedy path), `PoT k=10` (majority of 10 paths), `MD vote k=10` (pooled)."""
    return MODE_NAMES.get(mode, mode) + (f" k={k}" if k > 1 else "")


def latest_evals(reg: Registry, tasks: Sequence[str] = (), models: Sequence[str] = ()) -> pl.DataFrame:
    """The newest summary per (model, task, split, mode, k, rule); `models` match a model key or a report label.
    Columns: those of `evals`, plus `label` (default: the model key), `ties` and `ties_lost` from the summary."""
    where, params = "", []
    if tasks:
        where += " AND e.task IN (SELECT unnest(?))"
        params.append(list(tasks))
    if models:
        where += " AND (e.model IN (SELECT unnest(?)) OR json_extract_string(e.summary, '$.label') IN (SELECT unnest(?)))"
        params += [list(models), list(models)]
    df = reg.query(_LATEST.format(where=where), params or None)
    if df.height == 0:
        return df
    return df.with_columns(pl.coalesce("label", "model").alias("label"))


def card_results(reg: Registry, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The newest eval of each (task, split, mode, k) of one model (by model id, adapter path or Hub repo), as the
    rows `cards/model_card.md` renders."""
    df = latest_evals(reg, models=keys)
    return [
        {"task": r["task"], "split": r["split"], "mode": r["mode"], "k": r["k"], "n": r["n"], "rule": r["rule"],
         "dataset_type": r["task"], "accuracy": round(float(r["accuracy"]), 4), "mode_label": mode_label(r["mode"], r["k"])}
        for r in df.iter_rows(named=True)
    ] if df.height else []
