"""Foundation commands: tasks, problems, sql, info."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import polars as pl
import typer
from rich.table import Table

from mixdistill.cli.app import app, console, state
from mixdistill.errors import MixdistillError, TaskError
from mixdistill.registry import SCHEMA_VERSION, Registry
from mixdistill.registry.problems import save_problems
from mixdistill.tasks import TASKS, CustomTask, load_problems

problems_app = typer.Typer(help="Import and inspect problems.", no_args_is_help=True)
app.add_typer(problems_app, name="problems")


@app.command()
def tasks() -> None:
    """List the built-in tasks, their splits and sizes (read from the data dir)."""
    table = Table(title=f"tasks (data dir: {state.data_dir})")
    for col in ("task", "answer", "license", "splits (problems)", "description"):
        table.add_column(col)
    for t in TASKS.values():
        try:
            t.require_files(state.data_dir)
            sizes = ", ".join(f"{s} ({len(t.load_split(state.data_dir, s))})" for s in t.splits)
        except TaskError:
            sizes = f"{', '.join(t.splits)} [yellow](files missing: `mixdistill data fetch {t.name}`)[/]"
        table.add_row(t.name, t.answer_type, t.license, sizes, t.description)
    console.print(table)


@problems_app.command("import")
def problems_import(
    task: str = typer.Argument(..., help="built-in task name, or the name of a custom task with --file/--hub"),
    split: Optional[list[str]] = typer.Option(None, "--split", "-s", help="split(s) to import; default: all"),
    file: Optional[Path] = typer.Option(None, "--file", help="custom task: a .parquet/.jsonl/.json/.csv file"),
    hub: Optional[str] = typer.Option(None, "--hub", help="custom task: a Hub dataset id"),
    question: Optional[list[str]] = typer.Option(None, "--question", help="custom: question column(s)"),
    answer: Optional[str] = typer.Option(None, "--answer", help="custom: gold answer column"),
    id_column: Optional[str] = typer.Option(None, "--id", help="custom: id column (default: row number)"),
    answer_type: str = typer.Option("number", "--answer-type", help="custom: number | bool"),
    license: str = typer.Option("unknown", "--license", help="custom: license of the source"),
) -> None:
    """Load a task split into the registry (idempotent: problems are keyed by content)."""
    if file or hub:
        if not question or not answer:
            raise MixdistillError("a custom task needs --question and --answer column names")
        try:
            spec = CustomTask(
                name=task,
                path=file,
                hub=hub,
                split=(split or ["train"])[0],
                question=question if len(question) > 1 else question[0],
                answer=answer,
                id=id_column,
                answer_type=answer_type,
                license=license,
            )
        except ValueError as e:
            raise MixdistillError(f"custom task {task!r}: {str(e).splitlines()[-1].strip()}") from None
        jobs = [spec]
    else:
        if task not in TASKS:
            raise TaskError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)} (or pass --file/--hub)")
        jobs = list(split or TASKS[task].splits)
    loaded = [
        load_problems(job, None, state.data_dir) if isinstance(job, CustomTask) else load_problems(task, job, state.data_dir)
        for job in jobs
    ]
    # everything is parsed before the registry is touched: a bad row leaves the registry unchanged
    with Registry.open(state.registry) as reg:
        for split_name, problems in loaded:
            new, linked = save_problems(reg, task, split_name, problems)
            console.print(
                f"{task}/{split_name}: {len(problems)} problems ({new} new, {len(problems) - new} already stored)"
            )
    console.print(f"registry: {state.registry}")


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the registry (read-only), e.g. \"SELECT * FROM audit_pass_rate\""),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="output format"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to a file (required for parquet)"),
    max_rows: int = typer.Option(50, "--max-rows", help="rows shown in table format"),
) -> None:
    """Run a read-only SQL query against the registry."""
    if fmt is Format.parquet and output is None:
        raise MixdistillError("--format parquet needs --output FILE")
    with Registry.open(state.registry, read_only=True) as reg:
        try:
            df = reg.query(query)
        except Exception as e:  # duckdb errors: show the database's own one-line reason
            raise MixdistillError(f"query failed: {str(e).splitlines()[0]}") from None
    write_frame(df, fmt, output, max_rows)


def write_frame(df: pl.DataFrame, fmt: Format, output: Path | None, max_rows: int = 50) -> None:
    if fmt is Format.parquet:
        df.write_parquet(output)
    elif fmt is Format.csv:
        text = df.write_csv()
        _emit(text, output)
    elif fmt is Format.json:
        _emit(json.dumps(df.to_dicts(), default=str, ensure_ascii=False, indent=1) + "\n", output)
    else:
        if output is not None:
            raise MixdistillError("--output needs --format csv, json or parquet")
        console.print(frame_table(df, max_rows))
        return
    if output is not None:
        console.print(f"wrote {df.height} rows to {output}", highlight=False)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def frame_table(df: pl.DataFrame, max_rows: int = 50, title: str | None = None) -> Table:
    table = Table(title=title, caption=None if df.height <= max_rows else f"{df.height - max_rows} more rows not shown")
    for name in df.columns:
        table.add_column(name, overflow="fold")
    for row in df.head(max_rows).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


@app.command()
def info() -> None:
    """Registry path, schema version and row counts."""
    path = state.registry
    console.print(f"registry: {path}")
    if not path.exists():
        console.print(f"not created yet (schema version {SCHEMA_VERSION} will be created on first write)")
        return
    with Registry.open(path, read_only=True) as reg:
        console.print(f"schema version: {reg.schema_version()} (this mixdistill: {SCHEMA_VERSION})")
        console.print(f"size: {path.stat().st_size / 1e6:.1f} MB")
        counts = reg.table_counts()
    console.print(frame_table(pl.DataFrame({"table": list(counts), "rows": list(counts.values())}), 100))
