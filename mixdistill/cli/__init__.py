"""`mixdistill` command line. Errors a user caused print one line and exit with code 2; usage errors print click's
usage message and exit with code 2; SIGINT / SIGTERM stop with 130 / 143 (see `mixdistill.stopping`).

Command modules import their heavy dependencies (teacher SDKs, torch, transformers, datasets, matplotlib) inside the
command body, so `mixdistill --help`, `info` or `sql` start in a fraction of a second.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
from pathlib import Path

import typer

from mixdistill.cli.common import click_exceptions, err_console
from mixdistill.errors import MixdistillError
from mixdistill.stopping import Stopped, exit_code_for, install_signal_handlers

# Command modules attach their commands to `app` on import. A command line imports only the module of its command
# (the others cost 20-40 ms of every start-up, and typer inspects each command's signature); `--help`, `bench`, no
# command or an unknown one import them all, so click lists and suggests every command.
COMMAND_MODULES = {
    "tasks": "core", "sql": "core", "info": "core", "problems": "core",
    "eval": "evaluate", "report": "evaluate",
    "verify": "verify",
    "generate": "generate", "teachers": "generate",
    "build": "corpus", "corpora": "corpus", "diff": "corpus", "push": "corpus", "fetch-demo-model": "corpus",
    "data": "data",
    "train": "train", "push-adapter": "train",
    "registry": "registry",
    "reproduce": "reproduce",
}
ALL_MODULES = ("core", "evaluate", "verify", "generate", "corpus", "data", "train", "registry", "scale", "reproduce")
_GLOBAL_OPTIONS_WITH_VALUE = ("--registry", "--data-dir")


def load_commands(argv: list[str] | None = None) -> None:
    """Import the command modules that `argv` (the arguments after the program name) needs; None: every module."""
    names = ALL_MODULES
    if argv is not None:
        args = iter(argv)
        for arg in args:
            if arg in _GLOBAL_OPTIONS_WITH_VALUE:
                next(args, None)
            elif not arg.startswith("-"):
                names = (COMMAND_MODULES[arg],) if arg in COMMAND_MODULES else ALL_MODULES
                break
    for name in names:
        importlib.import_module(f"mixdistill.cli.{name}")


def __getattr__(name: str):
    if name == "app":  # `from mixdistill.cli import app` (typer's CliRunner): the application with every command
        load_commands()
        from mixdistill.cli.common import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    clicks = click_exceptions()
    install_signal_handlers()
    load_commands(sys.argv[1:])
    from mixdistill.cli.common import app

    try:
        rc = app(standalone_mode=False)  # returns click's exit code for typer.Exit
    except MixdistillError as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            err_console.print(f"[bold red]error:[/] {line}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(e.exit_code)
    except Stopped as e:
        _interrupted(e.exit_code)
    except KeyboardInterrupt:
        _interrupted(exit_code_for())
    except SystemExit:
        raise
    except clicks.ClickException as e:  # usage errors: click's usage message, exit code 2
        e.show()
        sys.exit(e.exit_code)
    except typer.Abort:  # Ctrl-C or EOF inside a prompt (typer's own; its bundled click has none)
        _interrupted(exit_code_for())
    except Exception as e:
        if not _out_of_memory(e):
            raise
        err_console.print(f"[bold red]error:[/] {_memory_advice(e)}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(1)
    if rc == 130:  # typer turns Ctrl-C into exit code 130 without a word
        _interrupted(exit_code_for())
    if _own_process():
        # The interpreter's exit runs full garbage collections over every object the command's libraries left (0.15-
        # 0.2 s after a `generate`, a fifth of its time outside the requests); frozen objects are skipped, and are
        # still freed with their modules.
        gc.freeze()
    sys.exit(rc if isinstance(rc, int) else 0)


def _out_of_memory(e: BaseException) -> bool:
    """DuckDB's OutOfMemoryException, recognised without importing duckdb (a command that never opened it)."""
    return type(e).__name__ == "OutOfMemoryException" and type(e).__module__.split(".")[0] in ("duckdb", "_duckdb")


def _memory_advice(e: BaseException) -> str:
    """One line for a query DuckDB could not run within its memory limit. Writes that outgrow it are caught where
    they happen (`Registry._out_of_memory`); this is every other query, e.g. a join of several tables too large for
    the limit together (DuckDB's hash joins in one pipeline do not share it: such a query can fail at 1GB and pass at
    1.5GB, or at 300MB)."""
    from mixdistill import settings

    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return (f"DuckDB ran out of memory within its limit (${settings.DB_MEMORY_ENV}={settings.db_memory()}): {first}; "
            f"{settings.db_memory_advice()}")


def _interrupted(code: int) -> None:
    # every step writes as it goes (generations, executions, verdicts), so a re-run continues where this one stopped
    err_console.print("interrupted; everything stored so far is kept, and the same command continues from there")
    if _own_process():
        # Everything is written and closed by now. Tearing down the interpreter (the provider SDKs, pydantic, torch
        # modules) took 1-2 s on a loaded machine, past the 2 s a stop may take: skip it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _own_process() -> bool:
    """True when this process is the `mixdistill` console script or `python -m mixdistill` (not a test calling main)."""
    main_file = Path(getattr(sys.modules.get("__main__"), "__file__", None) or "")
    return main_file.name == "mixdistill" or (main_file.name == "__main__.py" and main_file.parent.name == "mixdistill")


__all__ = ["app", "main"]
