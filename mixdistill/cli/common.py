"""The typer application and what every command shares: global options, consoles, error reporting.

Command groups live in sibling modules (`core`, ...) and attach themselves to `app` / `bench_app` on import;
`mixdistill.cli.main` imports the one a command line needs (`mixdistill.cli.load_commands`). Help is click's plain
help (`rich_markup_mode=None`): typer's rich help shows Python type placeholders such as `<bool>` for `--help`, and
costs start-up time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

import typer
from rich.console import Console

import mixdistill
from mixdistill import settings

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="mixdistill",
    help="Mixed Distillation: build verified CoT + PoT rationale corpora from teachers, audit them with SQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)
bench_app = typer.Typer(help="Benchmarks (speed and memory targets live here, not in unit tests).", no_args_is_help=True,
                        rich_markup_mode=None, context_settings=CONTEXT)
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)


def click_exceptions() -> ModuleType:
    """The exceptions module of the click that typer really uses: typer >= 0.2x bundles its own copy as
    `typer._click`, whose exceptions do not match the separate `click` package's."""
    try:
        from typer._click import exceptions
    except ImportError:  # an older typer, built on the click package
        from click import exceptions
    return exceptions


@dataclass
class State:
    registry: Path
    data_dir: Path
    verbosity: int = 0  # -1 quiet, 0 normal, 1 verbose


state = State(registry=settings.registry_path(), data_dir=settings.data_dir())


def _version(value: bool) -> None:
    if value:
        console.print(f"mixdistill {mixdistill.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    registry: Optional[Path] = typer.Option(
        None, "--registry", metavar="FILE",
        help=f"registry DuckDB file (env {settings.REGISTRY_ENV}; default: $MIXDISTILL_HOME/registry.duckdb)",
    ),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", metavar="DIR",
        help=f"benchmark data folder; also fills ${{{settings.DATA_ENV}}} in recipes "
        f"(env {settings.DATA_ENV}; default: $MIXDISTILL_HOME/data)",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log what each stage does (logging level INFO)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="warnings and errors only; no progress output"),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="print the version and exit"),
) -> None:
    state.registry = settings.registry_path(registry)
    state.data_dir = settings.data_dir(data_dir)
    if data_dir is not None:  # recipes' ${MIXDISTILL_DATA} is the flag's folder, for this command
        ctx.call_on_close(settings.publish_data_dir(state.data_dir))
    if verbose and quiet:
        raise click_exceptions().UsageError("--verbose and --quiet exclude each other")
    state.verbosity = 1 if verbose else -1 if quiet else 0
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def progress_enabled(flag: bool) -> bool:
    """Whether a command shows progress: its own --progress/--no-progress flag, and not under --quiet."""
    return flag and state.verbosity >= 0
