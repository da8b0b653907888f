"""`mixdistill` command line. Errors a user caused print one line and exit with code 2."""

from __future__ import annotations

import sys

from mixdistill.cli import core  # noqa: F401  (registers commands)
from mixdistill.cli import evaluate  # noqa: F401  (eval, report, bench eval)
from mixdistill.cli import verify  # noqa: F401  (verify, bench sandbox)
from mixdistill.cli import generate  # noqa: F401  (generate, teachers, bench teachers)
from mixdistill.cli import corpus  # noqa: F401  (build, corpora, diff, push)
from mixdistill.cli import train  # noqa: F401  (train, push-adapter, bench train)
from mixdistill.cli import registry  # noqa: F401  (registry merge)
from mixdistill.cli import scale  # noqa: F401  (bench scale)
from mixdistill.cli.app import app, err_console
from mixdistill.errors import MixdistillError


def main() -> None:
    try:
        rc = app(standalone_mode=False)  # returns click's exit code for typer.Exit
    except MixdistillError as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            err_console.print(f"[bold red]error:[/] {line}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and Ctrl-C (as Abort) arrive here with standalone_mode=False
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            _interrupted()
        raise
    if rc == 130:  # typer turns Ctrl-C into exit code 130 without a word
        _interrupted()
    sys.exit(rc if isinstance(rc, int) else 0)


def _interrupted() -> None:
    # every step writes as it goes (generations, executions, verdicts), so a re-run continues where this one stopped
    err_console.print("interrupted; everything stored so far is kept, and the same command continues from there")
    sys.exit(130)


__all__ = ["app", "main"]
