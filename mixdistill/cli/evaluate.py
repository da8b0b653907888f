"""Evaluation commands: eval, report, bench eval."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mixdistill.cli.common import app, bench_app, console, state


@app.command("eval")
def eval_(
    recipe: Path = typer.Argument(..., help="evaluation recipe (YAML, kind: eval)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="only the first N problems of each task split"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (overrides the recipe's threads)"),
) -> None:
    """Evaluate a model: k paths per mode, votes within CoT, within PoT and pooled (MD); every path is stored.

    Re-running the same recipe resumes: only problems without stored paths are generated.
    """
    from mixdistill.cpu import check_threads
    from mixdistill.errors import MixdistillError
    from mixdistill.recipe import EvalRecipe, load_for_run
    from mixdistill.verify.rules import get_rule

    spec = load_for_run(recipe, EvalRecipe)
    if threads is not None:
        spec = spec.model_copy(update={"threads": check_threads(threads, "--threads")})
    try:
        get_rule(spec.rule)  # before any model is loaded
    except MixdistillError as e:
        raise MixdistillError(f"{recipe}: rule: {e}") from None
    if limit is not None:
        spec = spec.model_copy(update={"tasks": [t.model_copy(update={"limit": limit}) for t in spec.tasks]})
    from mixdistill.evaluate import run_eval
    from mixdistill.evaluate.report import mode_label

    results = run_eval(spec, state.registry, state.data_dir, console=console)
    table = Table(title=f"{spec.name}: accuracy")
    for col in ("task", "split", "mode", "n", "correct", "accuracy", "path acc.", "any path", "ties", "ties lost"):
        table.add_column(col)
    for r in results:
        for m in r.modes:
            s = m.score.summary()
            pct = lambda v: "" if v is None else f"{100 * v:.1f}%"
            table.add_row(r.task, r.split, mode_label(m.mode, spec.k), str(s["n"]), str(s["correct"]),
                          pct(s["accuracy"]), pct(s["path_accuracy"]), pct(s["oracle_accuracy"]), str(s["ties"]), str(s["ties_lost"]))
    console.print(table)
    tokens, seconds = sum(r.generated_tokens for r in results), sum(r.generation_s for r in results)
    paths = sum(r.generated_paths for r in results)
    rate = f", {tokens / seconds:.1f} tokens/s" if seconds and tokens else ""
    console.print(f"generated {paths} paths ({tokens} tokens{rate}); stored in {state.registry} "
                  "(tables evals, eval_samples)", highlight=False)


@app.command()
def report(
    task: list[str] | None = typer.Option(None, "--task", help="only these tasks (repeatable)"),
    model: list[str] | None = typer.Option(None, "--model", help="only these models (label, model id or name)"),
    out: Path | None = typer.Option(None, "--out", help="folder for eval_report.md and eval_report.png "
                                    "(default: $MIXDISTILL_HOME/reports)"),
) -> None:
    """Comparison table of stored evals: models x modes (rows) x task splits (columns), as Markdown and a plot."""
    from mixdistill.errors import MixdistillError
    from mixdistill.evaluate.report import comparison_table, latest_evals, write_report
    from mixdistill.registry import Registry

    with Registry.open(state.registry, read_only=True) as reg:
        df = latest_evals(reg, task or (), model or ())
    if df.height == 0:
        raise MixdistillError(f"no evaluations in {state.registry} match; run `mixdistill eval RECIPE` first")
    table = comparison_table(df)
    shown = Table(title="accuracy (%)")
    for col in ("model", "mode", *table.header()):
        shown.add_column(col)
    for i, (label, mode, _) in enumerate(table.rows):
        shown.add_row(label, mode, *[table.cell_text(i, j) for j in range(len(table.columns))])
    console.print(shown)
    from mixdistill import settings

    md, png = write_report(table, out or settings.default_home() / "reports")
    console.print(f"wrote {md} and {png}", highlight=False)


@bench_app.command("eval")
def bench_eval(
    shape: str = typer.Option("tiny", "--shape", help="tiny (CPU) or llama2-7b (random weights, GPU)"),
    backend: list[str] | None = typer.Option(None, "--backend", help="transformers and/or vllm (repeatable)"),
    problems: int = typer.Option(16, "--problems", min=1, help="problems (SVAMP test questions when available)"),
    k: int = typer.Option(10, "--k", min=1, help="sampled paths per problem"),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1),
    batch: list[int] | None = typer.Option(None, "--batch", help="problems per generate() call (repeatable)"),
    threads: list[int] | None = typer.Option(None, "--threads", help="torch CPU threads (repeatable: timed in turn; "
                                             "default: the recipes' default)"),
    model: Path | None = typer.Option(None, "--model", help="a local model folder instead of a random-weight --shape"),
    variant: list[str] | None = typer.Option(None, "--variant", help="transformers DECODER:PRECISION, repeatable, "
                                             "e.g. generate:fp32 fast:bf16 (default fast:auto)"),
    shots: int = typer.Option(0, "--shots", min=0, help="few-shot exemplars per prompt (the base model's prompt; "
                              "0: the student format)"),
    output: Path | None = typer.Option(None, "--json", help="write the results here"),
) -> None:
    """Generated tokens/s for k paths per problem with the evaluation backends; ratios are to the first row."""
    from mixdistill.cpu import check_threads
    from mixdistill.errors import MixdistillError
    from mixdistill.evaluate.bench import bench_eval as run_bench
    from mixdistill.evaluate.bench import format_rows, parse_variant, rows_json

    for n in threads or []:
        check_threads(n, "--threads")
    names = backend or ["transformers"]
    unknown = [n for n in names if n not in ("transformers", "vllm")]
    if unknown:
        raise MixdistillError(f"--backend: unknown backend {unknown[0]!r}; use transformers or vllm")
    variants = [parse_variant(v) for v in variant or []]
    rows = run_bench(shape, names, problems, k, max_tokens, batch or [8], state.data_dir, threads, model, variants,
                     shots)
    if output:
        output.write_text(rows_json(rows), encoding="utf-8")
    console.print(format_rows(rows), highlight=False)
