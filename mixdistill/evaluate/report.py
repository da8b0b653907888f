"""Stored evals -> the comparison table (models x modes x tasks, the shape of the MD paper's tables), its Markdown and
plot, and the Hub `model-index` results of a model card.

The newest summary wins when the same (model, task, split, mode, k, rule) was evaluated more than once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mixdistill.registry import Registry

_LATEST = """
SELECT e.*, json_extract_string(e.summary, '$.label') AS label
FROM evals e
WHERE e.accuracy IS NOT NULL {where}
QUALIFY row_number() OVER (PARTITION BY e.model, e.task, e.split, e.mode, e.k, e.rule ORDER BY e.created_at DESC) = 1
ORDER BY e.task, e.split, e.model, e.mode, e.k
"""
MODE_NAMES = {"cot": "CoT", "pot": "PoT", "md": "MD vote"}
MODE_ORDER = {"cot": 0, "pot": 1, "md": 2}


def mode_label(mode: str, k: int) -> str:
    """`CoT` (single greedy path), `PoT k=10` (majority of 10 paths), `MD vote k=10` (pooled)."""
    return MODE_NAMES.get(mode, mode) + (f" k={k}" if k > 1 else "")


def latest_evals(reg: Registry, tasks: Sequence[str] = (), models: Sequence[str] = ()) -> pl.DataFrame:
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


@dataclass(frozen=True)
class Table:
    """Rows: (model, mode); columns: task/split; cells: accuracy in %. `n` per column for the header."""

    columns: list[str]
    rows: list[tuple[str, str, list[float | None]]]  # (model label, mode label, accuracy per column)
    n: dict[str, int]
    rules: tuple[str, ...] = ()  # rule@version of the rows, naming the CoT reading (`+cot-stated`)

    def markdown(self) -> str:
        head = ["model", "mode", *[f"{c} (n={self.n[c]})" for c in self.columns]]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * 2 + [" ---: "] * len(self.columns)) + "|"]
        for model, mode, values in self.rows:
            cells = ["" if v is None else f"{100 * v:.1f}" for v in values]
            lines.append("| " + " | ".join([model, mode, *cells]) + " |")
        return "\n".join(lines) + "\n"


def comparison_table(df: pl.DataFrame) -> Table:
    """Accuracy (%) per model and mode (rows) and task split (columns), as in the paper's tables."""
    columns = sorted({f"{t}/{s}" for t, s in zip(df["task"], df["split"])})
    n = {}
    cells: dict[tuple[str, str, int, str], dict[str, float]] = {}
    for r in df.iter_rows(named=True):
        col = f"{r['task']}/{r['split']}"
        n[col] = max(n.get(col, 0), r["n"] or 0)
        cells.setdefault((r["label"], r["mode"], r["k"], r["rule"]), {})[col] = r["accuracy"]
    keys = sorted(cells, key=lambda x: (x[0], x[2], MODE_ORDER.get(x[1], 9), x[3]))
    rules = {k[3] for k in keys}
    rows = [
        (label, mode_label(mode, k) + (f" [{rule}]" if len(rules) > 1 else ""), [cells[(label, mode, k, rule)].get(c) for c in columns])
        for label, mode, k, rule in keys
    ]
    return Table(columns, rows, n, tuple(sorted(rules)))


def plot_figure(table: Table):
    """Grouped bars: one group per task split, one bar per (model, mode), each labelled with its accuracy; the title
    says what is shown, and the legend sits below the axes, where it cannot cover a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = max(1, len(table.rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + 0.55 * len(table.columns) * n_rows), 4.2), layout="constrained")
    width = 0.8 / n_rows
    for i, (model, mode, values) in enumerate(table.rows):
        xs = [j + (i - (n_rows - 1) / 2) * width for j in range(len(table.columns))]
        heights = [100 * v if v is not None else float("nan") for v in values]  # nan: not evaluated, no bar
        bars = ax.bar(xs, heights, width, label=f"{model}: {mode}")
        ax.bar_label(bars, labels=["" if v is None else f"{100 * v:.1f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(table.columns)), [f"{c}\n(n={table.n.get(c, 0)})" for c in table.columns])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 108)  # room for the value above a 100% bar
    ax.set_title("Accuracy per model and mode on each task split")
    fig.legend(loc="outside lower center", ncol=min(3, n_rows), fontsize=8, frameon=False)
    return fig


def plot_png(table: Table) -> bytes:
    import matplotlib.pyplot as plt

    fig = plot_figure(table)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def write_report(table: Table, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, png = out_dir / "eval_report.md", out_dir / "eval_report.png"
    md.write_text("# Evaluation\n\nAccuracy (%) per model and mode (rows) and task split (columns). `k=N`: the "
                  "majority of N sampled paths (MD: pooled over CoT and PoT); no k: one greedy path. Answer rule "
                  "(its version names the CoT reading, `stated` or `expression`): "
                  + (", ".join(f"`{r}`" for r in table.rules) or "n/a") + ".\n\n"
                  + table.markdown() + f"\n![accuracy]({png.name})\n", encoding="utf-8")
    png.write_bytes(plot_png(table))
    return md, png


# ------------------------------------------------------------------------------------------------ model card
def card_results(reg: Registry, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The newest eval of each (task, split, mode, k) of one model (by model id, adapter path or Hub repo), as the
    rows `cards/model_card.md` renders."""
    df = latest_evals(reg, models=keys)
    return [
        {"task": r["task"], "split": r["split"], "mode": r["mode"], "k": r["k"], "n": r["n"], "rule": r["rule"],
         "dataset_type": r["task"], "accuracy": round(float(r["accuracy"]), 4), "mode_label": mode_label(r["mode"], r["k"])}
        for r in df.iter_rows(named=True)
    ] if df.height else []


def model_index(name: str, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hub `model-index` metadata (huggingface_hub's own structure) from `card_results` rows."""
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    evals = [
        EvalResult(task_type="text-generation", task_name="Math word problems", dataset_type=r["dataset_type"],
                   dataset_name=r["task"], dataset_split=r["split"], metric_type="accuracy",
                   metric_value=r["accuracy"], metric_name=f"accuracy ({r['mode_label']}, n={r['n']})")
        for r in results
    ]
    return eval_results_to_model_index(name, evals) if evals else []

