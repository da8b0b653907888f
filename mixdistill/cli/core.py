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

from mixdistill.cli.common import CONTEXT, app, bench_app, console, state
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
            df = _displayable(reg, query)
        except Exception as e:  # duckdb errors: show the database's own one-line reason
            raise MixdistillError(f"query failed: {str(e).splitlines()[0]}") from None
    write_frame(df, fmt, output, max_rows)


def _displayable(reg, query: str) -> "pl.DataFrame":
    """The query's rows as a polars frame; INTERVAL columns (which polars cannot import) as DuckDB's text for them
    (a writer serving the query has done that already)."""
    import polars as pl

    from mixdistill.registry.serve import RemoteResult, intervals_as_text

    with reg.lock:
        rel = reg.con.sql(query)
        if rel is None:  # a statement without rows
            return pl.DataFrame()
        return (rel if isinstance(rel, RemoteResult) else intervals_as_text(rel)).pl()


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
        if reg.writer_pid is not None:
            console.print(f"being written by another process ({reg.writer_pid}): read through it, as of its last "
                          "commit", highlight=False)
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
    """Wall time of `mixdistill --help`, `info` and `sql "select 1"` against `python -c pass`, in the same run, with
    bytecode compiled as an installed copy has it (`cli.timing`).

    Target (idle 2-core machine): `--help` and `info` within 0.5 s of bare Python.
    """
    import os
    import resource
    import statistics
    import subprocess
    import tempfile
    import time

    from mixdistill.cli.timing import timed_env

    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry.duckdb"
        from mixdistill.registry import Registry
        with Registry.open(registry):
            pass
        env = timed_env(Path(tmp), MIXDISTILL_REGISTRY=str(registry))
        cli = [sys.executable, "-m", "mixdistill"]
        cases = [("python -c pass", [sys.executable, "-c", "pass"]), ("mixdistill --help", [*cli, "--help"]),
                 ("mixdistill info", [*cli, "info"]), ('mixdistill sql "select 1"', [*cli, "sql", "select 1"])]
        times: dict[str, list[float]] = {name: [] for name, _ in cases}
        cpu: dict[str, list[float]] = {name: [] for name, _ in cases}
        for _, argv in cases:  # untimed: fills the bytecode cache, as installing does (`cli.timing`)
            subprocess.run(argv, env=env, capture_output=True)
        for _ in range(repeat):  # interleaved, so a change in the machine's load touches every command alike
            for name, argv in cases:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                done = subprocess.run(argv, env=env, capture_output=True)
                times[name].append(time.perf_counter() - t0)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                if done.returncode != 0:
                    raise MixdistillError(f"bench startup: {name} failed: {done.stderr.decode()[-300:]}")
    base = statistics.median(times["python -c pass"])
    table = Table(title=f"bench startup (median of {repeat}, {os.cpu_count()} CPUs)")
    for col in ("command", "wall s", "over bare python s", "CPU s (load-proof)", "target"):
        table.add_column(col, justify="left" if col == "command" else "right")
    verdicts = []
    for name, _ in cases:
        median = statistics.median(times[name])
        target = "" if name.startswith("python") or "sql" in name else "<= 0.5 s over"
        if target:
            verdicts.append(f"{name}: {'met' if median - base <= 0.5 else 'NOT met'}")
        table.add_row(name, f"{median:.3f}", f"{median - base:+.3f}", f"{statistics.median(cpu[name]):.3f}", target)
    console.print(table)
    console.print("; ".join(verdicts) + " (an idle machine is the reference; load inflates every row)", highlight=False)


_READER = """
import sys, time
from mixdistill.registry import Registry
path, until = sys.argv[1], time.time() + float(sys.argv[2])
while time.time() < until:
    t0, w0 = time.perf_counter(), time.time()
    with Registry.open(path, read_only=True) as reg:
        n = reg.scalar("SELECT count(*) FROM runs")
    print(f"{w0:.6f} {time.perf_counter() - t0:.4f} {n}", flush=True)
    time.sleep(0.2)
"""


@bench_app.command("readers")
def bench_readers(
    seconds: float = typer.Option(10.0, "--seconds", min=1, help="length of each write phase"),
    rows: int = typer.Option(256, "--rows", min=1, help="rows per committed insert (the generation engine's batch)"),
    size: int = typer.Option(200_000, "--size", min=0, help="rows already stored before the timed phases"),
    pace: float = typer.Option(0.1, "--pace", min=0, help="seconds between commits in the paced phases (the "
                               "generation engine flushes every 0.5 s: 0.1 is five times its rate)"),
) -> None:
    """A writer commits inserts, paced like a build and saturated (as fast as it can), alone and while a reader
    process reads the registry every 0.2 s through it (alternated, twice each). Reports the writer's time per commit
    both ways, the reader's latency, and whether each read saw every commit made before it started.

    Target: readers answer within 1 s, as of the writer's last commit; the writer is slowed by at most 5%.
    """
    import statistics
    import subprocess
    import tempfile
    import time

    import polars as pl

    from mixdistill.registry import Registry

    def batch(start: int, n: int) -> pl.DataFrame:
        return pl.DataFrame({"run_id": [f"r{start + i}" for i in range(n)], "kind": ["build"] * n,
                             "status": ["done"] * n, "recipe": ["x" * 200] * n})

    stored = {"n": size}
    reads: list[tuple[float, float, int]] = []  # (wall time it started, latency, rows it saw)
    commits: list[tuple[float, int]] = []  # (wall time of the commit, rows stored after it)

    def phase(path: Path, read: bool, wait: float) -> float:
        """Seconds of work per commit (the insert itself; the pause between commits is not counted)."""
        busy, n = 0.0, 0
        with Registry.open(path) as reg:
            reader = subprocess.Popen([sys.executable, "-c", _READER, str(path), str(seconds)],
                                      stdout=subprocess.PIPE, text=True) if read else None
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds or (reader is not None and reader.poll() is None):
                t1 = time.perf_counter()
                reg.insert("runs", batch(stored["n"], rows))
                busy += time.perf_counter() - t1
                stored["n"] += rows
                n += 1
                commits.append((time.time(), stored["n"]))
                time.sleep(wait)
        if reader is not None:
            out, _ = reader.communicate(timeout=60)
            if reader.returncode != 0:
                raise MixdistillError("bench readers: the reader process failed")
            reads.extend((float(a), float(b), int(c)) for a, b, c in (line.split() for line in out.splitlines()))
        return busy / n

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.duckdb"
        with Registry.open(path, serve=False) as reg:
            for start in range(0, size, 10_000):
                reg.insert("runs", batch(10**9 + start, min(10_000, size - start)))
        per_commit: dict[tuple[str, bool], list[float]] = {}
        for _ in range(2):  # alternated, so the table's growth and the machine's load touch both alike
            for kind, wait in (("paced", pace), ("saturated", 0.0)):
                for read in (False, True):
                    per_commit.setdefault((kind, read), []).append(phase(path, read, wait))
    if not reads:
        raise MixdistillError("bench readers: no read was made; try a longer --seconds")
    stale = []
    for start, _, seen in reads:  # how long before the read started the first commit it did not see was made
        first_unseen = next((t for t, n in commits if n > seen), None)
        stale.append(max(0.0, start - first_unseen) if first_unseen is not None else 0.0)
    latency = [lat for _, lat, _ in reads]
    table = Table(title=f"bench readers ({size} rows stored first, {rows} rows per commit, {seconds:.0f} s per phase)")
    for col in ("measure", "value"):
        table.add_column(col)
    slowdown = {}
    for kind in ("paced", "saturated"):
        alone = statistics.mean(per_commit[(kind, False)])
        read = statistics.mean(per_commit[(kind, True)])
        step = pace if kind == "paced" else 0.0
        slowdown[kind] = (read + step) / (alone + step) - 1  # longer cycle = fewer commits per second
        table.add_row(f"{kind}: ms per commit, alone / while read", f"{alone * 1e3:.1f} / {read * 1e3:.1f}")
        table.add_row(f"{kind}: writer slowdown", f"{slowdown[kind]:.1%}")
    fresh = sum(1 for s in stale if s == 0.0)
    table.add_row("reads (commits in all phases)", f"{len(reads)} ({len(commits)})")
    table.add_row("read latency median / max s", f"{statistics.median(latency):.3f} / {max(latency):.3f}")
    table.add_row("reads that saw every commit made before they started", f"{fresh} / {len(reads)}")
    table.add_row("staleness median / max s", f"{statistics.median(stale):.3f} / {max(stale):.3f}")
    console.print(table)
    console.print(
        f"targets: reads within 1 s: {'met' if max(latency) <= 1 else 'NOT met'} (max {max(latency):.3f} s); "
        f"as of the last commit: {'met' if fresh == len(reads) else 'NOT met'} ({fresh}/{len(reads)}); writer "
        f"paced like a build slowed <= 5%: {'met' if slowdown['paced'] <= 0.05 else 'NOT met'} "
        f"({slowdown['paced']:.1%}; saturated {slowdown['saturated']:.1%}); a loaded machine inflates all of them",
        highlight=False,
    )
