"""Foundation commands: tasks, problems, sql, info.

`info` and `sql` import only duckdb (and polars for `sql`): the task loaders, numpy and pyarrow load where used.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from mixdistill.cli.app import CONTEXT, app, bench_app, console, state
from mixdistill.errors import MixdistillError, TaskError

if TYPE_CHECKING:
    import polars as pl

problems_app = typer.Typer(help="Import and inspect problems.", no_args_is_help=True, rich_markup_mode=None,
                           context_settings=CONTEXT)
app.add_typer(problems_app, name="problems")


@app.command()
def tasks() -> None:
    """List the built-in tasks, their splits and sizes (read from the data dir)."""
    from mixdistill.tasks import TASKS

    table = Table(title=f"tasks (data dir: {state.data_dir})")
    for col in ("task", "answer", "license", "splits (problems)", "description"):
        table.add_column(col)
    for t in TASKS.values():
        try:
            t.require_files(state.data_dir)
            sizes = ", ".join(f"{s} ({len(t.load_split(state.data_dir, s))})" for s in t.splits)
        except TaskError:
            sizes = f"{', '.join(t.splits)} [yellow](files missing)[/]"
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
    from pydantic import ValidationError

    from mixdistill.recipe import validation_lines
    from mixdistill.registry.problems import save_problems
    from mixdistill.tasks import TASKS, CustomTask, load_problems

    if file or hub:
        if not question or not answer:
            raise MixdistillError("a custom task needs --question and --answer column names")
        if id_column is not None and not id_column.strip():
            raise MixdistillError("--id: give the name of the id column (it is empty)")
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
        except ValidationError as e:
            raise MixdistillError(f"custom task {task!r}: {validation_lines(e)[0]}") from None
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
    from mixdistill.registry import Registry
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
    from mixdistill.registry.confine import refuse_side_effects

    if fmt is Format.parquet and output is None:
        raise MixdistillError("--format parquet needs --output FILE")
    check_output(output, fmt)
    refuse_side_effects(query)
    from mixdistill.registry import Registry
    with Registry.open(state.registry, read_only=True, confined=True) as reg:
        try:
            df = reg.query(query)
        except Exception as e:  # duckdb errors: show the database's own one-line reason
            raise MixdistillError(f"query failed: {str(e).splitlines()[0]}") from None
    write_frame(df, fmt, output, max_rows)


def check_output(output: Path | None, fmt: Format) -> None:
    """`--output`: a file in an existing folder, checked before the query runs."""
    if output is None:
        return
    if fmt is Format.table:
        raise MixdistillError("--output needs --format csv, json or parquet")
    if output.is_dir():
        raise MixdistillError(f"--output {output} is a folder; give a file name")
    if not output.parent.is_dir():
        raise MixdistillError(f"--output {output}: folder {output.parent} does not exist")


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
    return rows_table(df.columns, df.head(max_rows).iter_rows(), df.height, max_rows, title)


def rows_table(columns, rows, total: int, max_rows: int = 50, title: str | None = None) -> Table:
    table = Table(title=title, caption=None if total <= max_rows else f"{total - max_rows} more rows not shown")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


@app.command()
def info() -> None:
    """Registry path, schema version and row counts."""
    from mixdistill.registry import SCHEMA_VERSION

    path = state.registry
    console.print(f"registry: {path}")
    if not path.exists():
        console.print(f"not created yet (schema version {SCHEMA_VERSION} will be created on first write)")
        return
    from mixdistill.registry import Registry
    with Registry.open(path, read_only=True) as reg:
        if reg.path != path:
            console.print(f"being written by another process: showing its snapshot {reg.path.name} "
                          f"({reg.snapshot_age_s():.1f} s old)", highlight=False)
        console.print(f"schema version: {reg.schema_version()} (this mixdistill: {SCHEMA_VERSION})")
        console.print(f"size: {path.stat().st_size / 1e6:.1f} MB")
        counts = reg.table_counts()
        runs = reg.run_statuses()
    console.print(rows_table(("table", "rows"), counts.items(), len(counts), 100))
    if runs:
        console.print("runs: " + ", ".join(f"{n} {status}" for status, n in runs), highlight=False)


@bench_app.command("startup")
def bench_startup(
    repeat: int = typer.Option(5, "--repeat", "-n", min=1, help="runs of each command (the median is reported)"),
) -> None:
    """Wall time of `mixdistill --help`, `info` and `sql "select 1"` against `python -c pass`, in the same run.

    Target (idle 2-core machine): `--help` and `info` within 0.5 s of bare Python.
    """
    import os
    import statistics
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry.duckdb"
        from mixdistill.registry import Registry
        with Registry.open(registry):
            pass
        env = {**os.environ, "MIXDISTILL_REGISTRY": str(registry)}
        cli = [sys.executable, "-m", "mixdistill"]
        cases = [("python -c pass", [sys.executable, "-c", "pass"]), ("mixdistill --help", [*cli, "--help"]),
                 ("mixdistill info", [*cli, "info"]), ('mixdistill sql "select 1"', [*cli, "sql", "select 1"])]
        times: dict[str, list[float]] = {name: [] for name, _ in cases}
        for _ in range(repeat):  # interleaved, so a change in the machine's load touches every command alike
            for name, argv in cases:
                t0 = time.perf_counter()
                done = subprocess.run(argv, env=env, capture_output=True)
                times[name].append(time.perf_counter() - t0)
                if done.returncode != 0:
                    raise MixdistillError(f"bench startup: {name} failed: {done.stderr.decode()[-300:]}")
    base = statistics.median(times["python -c pass"])
    table = Table(title=f"bench startup (median of {repeat}, {os.cpu_count()} CPUs)")
    for col in ("command", "wall s", "over bare python s", "target"):
        table.add_column(col, justify="left" if col == "command" else "right")
    verdicts = []
    for name, _ in cases:
        median = statistics.median(times[name])
        target = "" if name.startswith("python") or "sql" in name else "<= 0.5 s over"
        if target:
            verdicts.append(f"{name}: {'met' if median - base <= 0.5 else 'NOT met'}")
        table.add_row(name, f"{median:.3f}", f"{median - base:+.3f}", target)
    console.print(table)
    console.print("; ".join(verdicts) + " (an idle machine is the reference; load inflates every row)", highlight=False)
