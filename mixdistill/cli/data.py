"""`mixdistill data fetch`: the built-in tasks' upstream files, at pinned commits, checked by SHA-256."""

from __future__ import annotations

from typing import Optional

import typer

from mixdistill.cli.common import app, console, state

data_app = typer.Typer(help="Benchmark data of the built-in tasks.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def fetch(
    tasks: Optional[list[str]] = typer.Argument(None, help="built-in tasks (default: all)"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="mirror of raw.githubusercontent.com "
                                           "(env MIXDISTILL_FETCH_BASE_URL)"),
) -> None:
    """Download the upstream files of built-in tasks into the data dir and check their SHA-256."""
    from mixdistill.tasks.fetch import fetch as run_fetch

    with console.status("downloading"):
        fetched = run_fetch(tasks, state.data_dir, base_url)
    for f in fetched:
        console.print(f"{f.task}: {f.path} ({f.status}{', from ' + f.url if f.status == 'downloaded' else ''})",
                      highlight=False)
    console.print(f"data dir: {state.data_dir} ({sum(f.status == 'downloaded' for f in fetched)} downloaded, "
                  f"{sum(f.status == 'present' for f in fetched)} already present); `mixdistill tasks` lists them",
                  highlight=False)
