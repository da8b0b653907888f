"""`mixdistill registry merge`: fold the registries of a sharded build into one."""

from __future__ import annotations

from pathlib import Path

import typer

from mixdistill.cli.common import app, console, state

registry_app = typer.Typer(help="Registry maintenance: merge shard registries.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("merge")
def merge(
    shards: list[Path] = typer.Argument(..., help="shard registry files (from `generate/verify --shard I/N`)"),
) -> None:
    """Merge shard registries into the registry (--registry): a union by content-addressed keys.

    Merging a shard twice changes nothing; a key stored with different content in two files is an error naming the
    key, and then nothing of that shard is written (one transaction per shard).
    """
    from mixdistill.registry import Registry
    from mixdistill.registry.merge import check_sources, merge_registries

    check_sources(state.registry, shards)  # a missing shard leaves no new, empty target behind
    with Registry.open(state.registry, attach=True) as reg:  # ATTACHes each shard file
        reports = merge_registries(reg, shards)
    for r in reports:
        detail = ", ".join(f"{t} {n}" for t, n in r.added.items() if n) or "nothing new"
        console.print(f"{r.source}: {r.total} rows added ({detail})", highlight=False, soft_wrap=True)
    console.print(f"registry: {state.registry}", highlight=False, soft_wrap=True)
