"""Stored evals -> the comparison table (models x modes x tasks, the shape of the MD paper's tables), its Markdown and
plot, and the Hub `model-index` results of a model card.

Each cell keeps its own n (rows of one column can have been evaluated on different numbers of problems) and, for
votes, how many problems the tie-break decided and on how many of those it passed over a right answer. Reading the
stored summaries lives one floor down, in `registry.evals`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mixdistill.registry.evals import card_results, latest_evals, mode_label

__all__ = ["Table", "card_results", "comparison_table", "latest_evals", "mode_label", "model_index", "plot_png",
           "write_report"]
MODE_ORDER = {"cot": 0, "pot": 1, "md": 2}


@dataclass(frozen=True)
class Cell:
    accuracy: float
    n: int | None  # problems this row was evaluated on
    ties: int | None = None  # problems whose vote the tie-break decided (None: not recorded)
    ties_lost: int | None = None  # of those, problems where a tied answer was right but the tie-break chose another


@dataclass(frozen=True)
class Table:
    """Rows: (model, mode); columns: task/split; `rows` carry the accuracies, `cells` the same positions in full."""

    columns: list[str]
    rows: list[tuple[str, str, list[float | None]]]  # (model label, mode label, accuracy per column)
    cells: list[list[Cell | None]]
    rules: tuple[str, ...] = ()  # rule@version of the rows, naming the CoT reading (`+cot-stated`)

    def column_n(self, j: int) -> int | None:
        """The n every row of column j shares, or None when rows differ."""
        ns = {c.n for row in self.cells if (c := row[j]) is not None}
        return ns.pop() if len(ns) == 1 else None

    def header(self) -> list[str]:
        """Column names; the n goes into the header only when every row of the column has the same n."""
        return [c if self.column_n(j) is None else f"{c} (n={self.column_n(j)})" for j, c in enumerate(self.columns)]

    def cell_text(self, i: int, j: int) -> str:
        c = self.cells[i][j]
        if c is None:
            return ""
        return f"{100 * c.accuracy:.1f}" + (f" (n={c.n})" if self.column_n(j) is None else "")

    def row_n(self, i: int) -> str:
        """The row's own n: one number, or one per column evaluated when they differ (`30/50`)."""
        ns = sorted({c.n for c in self.cells[i] if c is not None and c.n is not None})
        return "/".join(map(str, ns))

    def tie_text(self, i: int, j: int) -> str:
        c = self.cells[i][j]
        if c is None or not c.ties:
            return "" if c is None or c.ties is None else "0"
        lost = f", {c.ties_lost} passing over a right answer" if c.ties_lost else ""
        return f"{c.ties} of {c.n}{lost}"

    def markdown(self) -> str:
        head = ["model", "mode", *self.header()]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * 2 + [" ---: "] * len(self.columns)) + "|"]
        for i, (model, mode, _) in enumerate(self.rows):
            lines.append("| " + " | ".join([model, mode, *[self.cell_text(i, j) for j in range(len(self.columns))]]) + " |")
        tied = [i for i, row in enumerate(self.cells) if any(c is not None and c.ties for c in row)]
        if tied:
            lines += ["", "Problems whose vote the tie-break decided (`tie_break` and `mode_weights` in the eval recipe), "
                      "and how many of those had a right answer among the tied ones that the tie-break passed over:", "",
                      "| model | mode | " + " | ".join(self.columns) + " |",
                      "|" + "|".join([" --- "] * 2 + [" ---: "] * len(self.columns)) + "|"]
            for i in tied:
                model, mode, _ = self.rows[i]
                lines.append("| " + " | ".join([model, mode, *[self.tie_text(i, j) for j in range(len(self.columns))]]) + " |")
        return "\n".join(lines) + "\n"


def comparison_table(df: pl.DataFrame) -> Table:
    """Accuracy (%) per model and mode (rows) and task split (columns), as in the paper's tables."""
    columns = sorted({f"{t}/{s}" for t, s in zip(df["task"], df["split"])})
    found: dict[tuple[str, str, int, str], dict[str, Cell]] = {}
    for r in df.iter_rows(named=True):
        col = f"{r['task']}/{r['split']}"
        found.setdefault((r["label"], r["mode"], r["k"], r["rule"]), {})[col] = Cell(
            r["accuracy"], r["n"], r.get("ties"), r.get("ties_lost"))
    keys = sorted(found, key=lambda x: (x[0], x[2], MODE_ORDER.get(x[1], 9), x[3]))
    rules = {k[3] for k in keys}
    cells = [[found[key].get(c) for c in columns] for key in keys]
    rows = [
        (label, mode_label(mode, k) + (f" [{rule}]" if len(rules) > 1 else ""), [c.accuracy if c else None for c in row])
        for (label, mode, k, rule), row in zip(keys, cells)
    ]
    return Table(columns, rows, cells, tuple(sorted(rules)))


def bar_colours(n: int) -> list:
    """n distinct colours: tab10 up to 10 bars, tab20 up to 20, evenly spaced hues beyond."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["hsv"](i / n) for i in range(n)]


def plot_figure(table: Table):
    """Grouped bars: one group per task split, one bar per (model, mode), each labelled with its accuracy; the title
    says what is shown, and the legend sits below the axes, where it cannot cover a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = max(1, len(table.rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + 0.55 * len(table.columns) * n_rows), 4.2), layout="constrained")
    width = 0.8 / n_rows
    colours = bar_colours(n_rows)
    for i, (model, mode, values) in enumerate(table.rows):
        xs = [j + (i - (n_rows - 1) / 2) * width for j in range(len(table.columns))]
        heights = [100 * v if v is not None else float("nan") for v in values]  # nan: not evaluated, no bar
        bars = ax.bar(xs, heights, width, label=f"{model}: {mode} (n={table.row_n(i)})", color=colours[i])
        ax.bar_label(bars, labels=["" if v is None else f"{100 * v:.1f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(table.columns)), table.columns)
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
                  "majority of N sampled paths (MD: pooled over CoT and PoT); no k: one greedy path. `n`: the problems "
                  "a row was evaluated on (in the column header when every row of the column shares it). Answer rule "
                  "(its version names the CoT reading, `stated` or `expression`): "
                  + (", ".join(f"`{r}`" for r in table.rules) or "n/a") + ".\n\n"
                  + table.markdown() + f"\n![accuracy]({png.name})\n", encoding="utf-8")
    png.write_bytes(plot_png(table))
    return md, png


# ------------------------------------------------------------------------------------------------ model card
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

