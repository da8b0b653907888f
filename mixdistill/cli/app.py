"""The typer application and what every command shares: global options, consoles, error reporting.

Command groups live in sibling modules (`core`, ...) and attach themselves to `app` / `bench_app` on import;
`mixdistill.cli.main` imports them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mixdistill import settings

app = typer.Typer(
    name="mixdistill",
    help="Mixed Distillation: build verified CoT + PoT rationale corpora from teachers, audit them with SQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks (speed and memory targets live here, not in unit tests).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    registry: Path
    data_dir: Path


state = State(registry=settings.registry_path(), data_dir=settings.data_dir())


@app.callback()
def _global(
    registry: Optional[Path] = typer.Option(
        None, "--registry", help=f"registry DuckDB file (env {settings.REGISTRY_ENV}; default: {settings.default_home()}/registry.duckdb)"
    ),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help=f"benchmark data folder (env {settings.DATA_ENV})"
    ),
) -> None:
    state.registry = settings.registry_path(registry)
    state.data_dir = settings.data_dir(data_dir)
