"""The reproduction command: reproduce (the paper's table from one recipe)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixdistill.cli.common import app, console, progress_enabled, state


@app.command()
def reproduce(
    recipe: Path = typer.Argument(..., help="reproduction recipe (YAML, kind: reproduce)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show the build, training and eval bars"),
) -> None:
    """The MD paper's table on one student: corpus, teachers' row, base few-shot, CoT-, PoT-distilled, ensemble, MD.

    Writes table.md, table.png and table.json in the recipe's output_dir, and every row in `evals`. Re-running the
    same command resumes: finished stages are skipped, an interrupted one continues where it stopped.
    """
    from mixdistill.recipe import ReproduceRecipe, load_for_run

    spec = load_for_run(recipe, ReproduceRecipe)  # a missing student folder stops here, before torch is imported
    from mixdistill.reproduce import reproduce as run

    result = run(spec, state.registry, state.data_dir, console=console, progress=progress_enabled(progress))
    console.print(result.table.markdown(), highlight=False, markup=False, soft_wrap=True)
    total = sum(result.stage_seconds.values())
    console.print(f"total wall time {total:.1f} s (all stages, all attempts); wrote "
                  + ", ".join(str(p) for p in result.files), highlight=False, soft_wrap=True)
