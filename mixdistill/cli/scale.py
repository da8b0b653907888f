"""`mixdistill bench scale`: the whole pipeline on a synthetic corpus of a given size, stage by stage.

Each stage runs as its own `mixdistill` process, so its wall time includes start-up (as a user pays it) and its peak
RSS is that process's own (`wait4`). The synthetic task is one-step word problems; the replayed teacher gives CoT and
PoT rationales with wrong answers, failing programs and a few programs that run into the time limit, so every
verification path is taken. Growth exponents are log-log slopes between the sizes (1.0: linear).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mixdistill.cli.common import bench_app, console
from mixdistill.errors import MixdistillError

TIMEOUTS_PER_SIZE = 3  # programs that loop until the sandbox stops them: their cost is per program, not per row
RSS_TARGET_MB = 2_000  # issue 15: every stage under 2 GB at 10^7 generations, not growing with N
AUDIT_VIEWS = ("audit_pass_rate", "audit_failures", "audit_mode_disagreement", "audit_cost", "audit_reasoning")


@dataclass
class Stage:
    name: str
    wall_s: float
    peak_rss_mb: float


def write_synthetic(folder: Path, problems: int, pot: bool) -> Path:
    """Task file, replay file and recipe for `problems` problems (CoT, and PoT when `pot`); returns the recipe."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "task.jsonl", "w", encoding="utf-8") as task, \
            open(folder / "replay.jsonl", "w", encoding="utf-8") as replay:
        for i in range(problems):
            a, b = i % 997 + 1, i // 997 + 2
            question = f"Item {i}: Sam has {a} pens and finds {b} more. How many pens does Sam have?"
            task.write(json.dumps({"id": f"s{i}", "question": question, "answer": a + b}) + "\n")
            stated = a + b if i % 10 else a + b + 1  # one CoT in ten is wrong
            cot = f"Sam starts with {a} pens and finds {b}, so {a} + {b} = {stated}. The answer is {stated}."
            if i % 20 == 7:
                cot = "Sam has some pens. It depends on how many he finds."  # states no answer
            replay.write(json.dumps({"question": question, "mode": "cot", "response": cot}) + "\n")
            if pot:
                if i < TIMEOUTS_PER_SIZE:
                    program = "while True:\n    pass"
                elif i % 25 == 3:
                    program = f"pens = {a}\nans = pens / 0"
                else:
                    program = f"pens = {a}\nfound = {b}\nans = pens + found" + (" + 1" if i % 8 == 5 else "")
                replay.write(json.dumps({"question": question, "mode": "pot", "response": program}) + "\n")
    recipe = {
        "name": "scale", "version": "1.0.0",
        "tasks": [{"custom": {"name": "scale", "path": str(folder / "task.jsonl"), "question": "question",
                              "answer": "answer", "id": "id", "license": "apache-2.0"}}],
        "teachers": [{"name": "replayed", "provider": "replay", "model": "synthetic",
                      "path": str(folder / "replay.jsonl"), "license": "apache-2.0",
                      "source": "synthetic, written by mixdistill bench scale"}],
        "modes": ["cot", "pot"] if pot else ["cot"],
        "samples": {"cot": 1, "pot": 1},
        "mix": {"k_per_mode": 1, "balance_modes": pot, "validation_fraction": 0.05},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def run_stage(name: str, args: list[str], registry: Path, module: str = "mixdistill") -> Stage:
    env = {**os.environ, "MIXDISTILL_REGISTRY": str(registry)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise MixdistillError(f"bench scale: stage {name} failed (exit {proc.returncode}) after {wall:.1f} s, "
                              f"peak RSS {usage.ru_maxrss / 1024:,.0f} MB: {err.strip()[-300:]}")
    stage = Stage(name, wall, usage.ru_maxrss / 1024)
    # as it ends: a run of hours shows its stages so far (and the ones before a stage that fails)
    console.print(f"  {name}: {wall:.1f} s, peak RSS {stage.peak_rss_mb:,.0f} MB", highlight=False)
    return stage


def measure(folder: Path, problems: int, pot: bool, workers: int | None) -> tuple[int, list[Stage], dict]:
    shutil.rmtree(folder, ignore_errors=True)
    recipe = write_synthetic(folder, problems, pot)
    registry, out = folder / "registry.duckdb", folder / "corpora"
    verify = ["verify", "--no-progress"] + (["--workers", str(workers)] if workers else [])
    stages = [
        run_stage("start-up (info)", ["info"], registry),
        run_stage("generate", ["generate", str(recipe), "--no-progress"], registry),
        run_stage("verify", verify, registry),
        run_stage("build", ["build", str(recipe), "--out", str(out), "--no-progress"], registry),
        run_stage("rebuild (cached)", ["build", str(recipe), "--out", str(out), "--no-progress"], registry),
    ]
    stages += [run_stage(v, ["sql", f"SELECT count(*) FROM {v}"], registry) for v in AUDIT_VIEWS]
    sizes = {"registry_mb": registry.stat().st_size / 1e6,
             "export_mb": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6}
    stages.append(run_stage(MIX_EXPORT_STAGE, [str(recipe), str(folder / "mix-export")], registry,
                            module="mixdistill.cli.scale"))
    return problems * (2 if pot else 1), stages, sizes


MIX_EXPORT_STAGE = "mix + export only"


def mix_and_export(recipe_path: Path, out: Path) -> None:
    """Only what `build` does after generation and verification (mix, register, export), as another version of the
    recipe: the part of a build whose memory is this module's to keep flat, measured without the plan."""
    from mixdistill import settings
    from mixdistill.corpus import build_version, export_version
    from mixdistill.recipe import BuildRecipe, load_recipe
    from mixdistill.registry import Registry

    recipe = load_recipe(recipe_path, BuildRecipe)
    major, minor, patch = recipe.version.split(".")
    recipe = recipe.model_copy(update={"version": f"{major}.{minor}.{int(patch) + 1}"})
    with Registry.open(settings.registry_path(), serve=False) as reg:
        version, mixed = build_version(reg, recipe)
        with mixed:
            export_version(reg, version.ref, mixed, out)


if __name__ == "__main__":
    mix_and_export(Path(sys.argv[1]), Path(sys.argv[2]))


def _slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2 or min(ys) <= 0:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / den if den else None


@bench_app.command("scale")
def bench_scale(
    generations: list[int] = typer.Option([10_000, 100_000], "--generations", "-n",
                                          help="corpus sizes in generations (repeat: -n 1e5 -n 1e6 ...)"),
    cot_only: bool = typer.Option(False, "--cot-only", help="CoT only (PoT execution time dominates at 10^7)"),
    work: Optional[Path] = typer.Option(None, "--work", help="scratch folder (default: a temporary one, removed)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="sandbox workers for verify"),
) -> None:
    """Per stage: wall time, microseconds per generation, peak RSS; registry and export size; growth exponents."""
    import tempfile

    if any(n < 10 for n in generations):
        raise MixdistillError("--generations: each size must be at least 10")
    root = work or Path(tempfile.mkdtemp(prefix="mixdistill-scale-"))
    results = []
    try:
        for n in sorted(generations):
            problems = n if cot_only else n // 2
            console.print(f"size {n:,} generations ({problems:,} problems)...", highlight=False)
            results.append(measure(root / f"n{n}", problems, not cot_only, workers))
    finally:
        if work is None:
            shutil.rmtree(root, ignore_errors=True)
    table = Table(title="bench scale (each stage is a fresh mixdistill process: start-up included)")
    for col in ("stage", "generations", "wall s", "us / generation", "peak RSS MB"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for n, stages, _ in results:
        for st in stages:
            table.add_row(st.name, f"{n:,}", f"{st.wall_s:.1f}", f"{1e6 * st.wall_s / n:.1f}", f"{st.peak_rss_mb:.0f}")
        table.add_section()
    console.print(table)
    sizes = Table(title="sizes and growth (log-log slope over the sizes; 1.0 = linear)")
    for col in ("", *(f"{n:,}" for n, _, _ in results)):
        sizes.add_column(col, justify="left" if not col else "right")
    sizes.add_row("registry MB", *(f"{z['registry_mb']:.1f}" for _, _, z in results))
    sizes.add_row("export MB", *(f"{z['export_mb']:.1f}" for _, _, z in results))
    console.print(sizes)
    ns = [n for n, _, _ in results]
    for i, stage in enumerate(results[0][1]):
        et = _slope(ns, [r[1][i].wall_s for r in results])
        er = _slope(ns, [r[1][i].peak_rss_mb for r in results])
        if et is not None:
            console.print(f"{stage.name}: time ~ N^{et:.2f}, peak RSS ~ N^{er:.2f}", highlight=False)
    for n, stages, _ in results:
        console.print(rebuild_line(n, {st.name: st.wall_s for st in stages}), highlight=False)
    for i, stage in enumerate(results[0][1]):
        console.print(memory_line(stage.name, [(n, r[i].peak_rss_mb) for n, r, _ in results]), highlight=False)


def rebuild_line(n: int, wall: dict[str, float]) -> str:
    """The cached rebuild against the first build (mixing and export after generate and verify), and against the
    whole first pass (generate + verify + build) a user pays on a fresh registry."""
    cached, first = wall["rebuild (cached)"], wall["build"]
    whole = first + wall["generate"] + wall["verify"]
    return (f"cached rebuild at {n:,}: {cached:.1f} s = {cached / first:.1%} of the first build ({first:.1f} s; "
            f"target < 5%: {'met' if cached / first < 0.05 else 'not met'}), {cached / whole:.1%} of generate + "
            f"verify + build ({whole:.1f} s)")


def memory_line(stage: str, peaks: list[tuple[int, float]]) -> str:
    """One stage's peak RSS at each size against the flat-memory target."""
    sizes = ", ".join(f"{mb:,.0f} MB at {n:,}" for n, mb in peaks)
    growth = _slope([n for n, _ in peaks], [mb for _, mb in peaks])
    trend = f" (~N^{growth:.2f})" if growth is not None else ""
    met = all(mb < RSS_TARGET_MB for _, mb in peaks)
    return (f"peak RSS {stage}: {sizes}{trend}; target < {RSS_TARGET_MB:,} MB at every size: "
            f"{'met' if met else 'NOT met'}")


_VIEWS_SQL = (
    "INSERT INTO teachers (teacher_id, name, provider, model) VALUES ('T', 'synthetic', 'openai', 'gpt-synthetic')",
    """INSERT INTO problems (problem_id, task, question, answer_type, gold_text, gold_number, source, source_id, license)
       SELECT printf('%016x', hash(i)), 'synth', 'Item ' || i || ': Sam has some pens. How many?', 'number',
              (i % 97)::VARCHAR, i % 97, 'synthetic', i::VARCHAR, 'cc0-1.0' FROM range($problems) t(i)""",
    """INSERT INTO problem_splits (task, split, problem_id, position)
       SELECT 'synth', 'train', printf('%016x', hash(i)), i FROM range($problems) t(i)""",
    """INSERT INTO generations (request_key, teacher_id, prompt_id, problem_id, task, mode, sample_index, status,
                                response_text, prompt_tokens, completion_tokens, cost_usd)
       SELECT printf('%016x', hash(i, m)), 'T', 'P' || m, printf('%016x', hash(i)), 'synth', m, 0,
              CASE WHEN i % 50 = 0 THEN 'error' ELSE 'ok' END,
              CASE m WHEN 'cot' THEN 'Sam starts with ' || (i % 89) || ' pens and finds ' || (i % 97 - i % 89) ||
                     ', so the answer is ' || (i % 97) || '.'
                     ELSE 'pens = ' || (i % 89) || chr(10) || 'ans = pens + ' || (i % 97 - i % 89) END,
              120, 40, 0.0001
       FROM range($problems) t(i), (SELECT unnest($modes) AS m)""",
    # with the program verify ran (schema 11 on): a PoT response here is the bare program
    """INSERT INTO executions (request_key, sandbox_version, status, answer, answer_number, error_class, program)
       SELECT printf('%016x', hash(i, 'pot')), '2', CASE WHEN i % 25 = 3 THEN 'error' ELSE 'ok' END,
              (i % 97)::VARCHAR, i % 97, CASE WHEN i % 25 = 3 THEN 'ZeroDivisionError' END,
              'pens = ' || (i % 89) || chr(10) || 'ans = pens + ' || (i % 97 - i % 89)
       FROM range($problems) t(i) WHERE list_contains($modes, 'pot')""",
    # every generation judged under rule version 2; one problem in ten also has an older verdict (version 1)
    """INSERT INTO verdicts (request_key, rule, rule_version, extracted, correct, reason, created_at)
       SELECT printf('%016x', hash(i, m)), 'strict', v, (i % 97)::VARCHAR, c, CASE WHEN c THEN 'correct'
              ELSE 'wrong-answer' END, TIMESTAMP '2026-01-01' + INTERVAL (v::INT) DAY
       FROM (SELECT i, m, v, CASE WHEN m = 'cot' THEN i % 7 <> 0 ELSE i % 11 <> 0 END AS c
             FROM range($problems) t(i), (SELECT unnest($modes) AS m), (VALUES ('1'), ('2')) vv(v)
             WHERE v = '2' OR i % 10 = 0)""",
)


def write_views_registry(registry: Path, generations: int, cot_only: bool) -> None:
    """A registry of `generations` synthetic generations written straight in SQL (no teacher, no sandbox): CoT and
    PoT of each problem (or CoT only), PoT executions, a verdict per generation and a superseded older one for a
    tenth of the problems, failures of each kind, so every audit view has rows to rank, join and count."""
    from mixdistill.registry import Registry

    modes = ["cot"] if cot_only else ["cot", "pot"]
    with Registry.open(registry, serve=False) as reg:
        with reg.transaction():
            for sql in _VIEWS_SQL:
                params = {k: v for k, v in {"problems": generations // len(modes), "modes": modes}.items()
                          if f"${k}" in sql}
                reg.con.execute(sql, params)
            reg.refresh_latest("verdicts")


def write_views_recipe(folder: Path, cot_only: bool) -> Path:
    """A build recipe of the SQL-written registry's task and teacher (its task file is never read: only the mix and
    the export run on that registry)."""
    import yaml

    recipe = {
        "name": "views", "version": "1.0.0",
        "tasks": [{"custom": {"name": "synth", "path": str(folder / "synth.jsonl"), "question": "question",
                              "answer": "answer", "id": "id", "license": "cc0-1.0"}}],
        "teachers": [{"name": "synthetic", "provider": "openai", "model": "gpt-synthetic", "license": "apache-2.0",
                      "source": "synthetic, written by mixdistill bench views"}],
        "modes": ["cot"] if cot_only else ["cot", "pot"],
        "samples": {"cot": 1, "pot": 1},
        "mix": {"k_per_mode": 1, "balance_modes": not cot_only, "validation_fraction": 0.05},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@bench_app.command("views")
def bench_views(
    generations: int = typer.Option(1_000_000, "--generations", "-n", help="synthetic generations in the registry"),
    cot_only: bool = typer.Option(False, "--cot-only", help="CoT only (one generation per problem)"),
    mix_export: bool = typer.Option(False, "--mix-export", help="also time mixing and export of the registry's "
                                                                "correct rationales into a corpus version"),
    work: Optional[Path] = typer.Option(None, "--work", help="scratch folder (default: a temporary one, removed)"),
) -> None:
    """Time each audit view (`SELECT count(*)`, a fresh `mixdistill sql` process each) on a registry of N synthetic
    generations written in SQL: the audit-view part of `bench scale` at sizes a full pipeline run takes hours for.
    With `--mix-export`, also what `build` does after generation and verification (mix, register, export)."""
    import tempfile

    if generations < 10:
        raise MixdistillError("--generations: the size must be at least 10")
    root = work or Path(tempfile.mkdtemp(prefix="mixdistill-views-"))
    try:
        registry = root / "views.duckdb"
        registry.unlink(missing_ok=True)
        started = time.perf_counter()
        write_views_registry(registry, generations, cot_only)
        console.print(f"registry of {generations:,} generations written in {time.perf_counter() - started:.1f} s "
                      f"({registry.stat().st_size / 1e6:,.0f} MB)", highlight=False)
        stages = [run_stage(v, ["sql", f"SELECT count(*) FROM {v}"], registry) for v in AUDIT_VIEWS]
        if mix_export:
            out = root / "mix-export"
            mixed = run_stage(MIX_EXPORT_STAGE, [str(write_views_recipe(root, cot_only)), str(out)], registry,
                              module="mixdistill.cli.scale")
            rows = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
            console.print(f"mix + export at {generations:,} generations: {mixed.wall_s:.1f} s "
                          f"({mixed.wall_s / generations * 1e6:.1f} us per generation), peak RSS "
                          f"{mixed.peak_rss_mb:,.0f} MB, export {rows:,.0f} MB", highlight=False)
    finally:
        if work is None:
            shutil.rmtree(root, ignore_errors=True)
    slowest = max(stages, key=lambda s: s.wall_s)
    console.print(f"audit views at {generations:,} generations: {min(s.wall_s for s in stages):.1f}-"
                  f"{slowest.wall_s:.1f} s each, whole process (slowest: {slowest.name}); peak RSS "
                  f"{max(s.peak_rss_mb for s in stages):,.0f} MB", highlight=False)


_ADDED_SQL = (  # a second teacher on every $every-th problem of `write_views_registry`'s, in both of its modes
    "INSERT INTO teachers (teacher_id, name, provider, model) VALUES ('A', 'added', 'openai', 'gpt-added')",
    """INSERT INTO generations (request_key, teacher_id, prompt_id, problem_id, task, mode, sample_index, status,
                                response_text, prompt_tokens, completion_tokens, cost_usd)
       SELECT printf('%016x', hash(i, m, 'added')), 'A', 'P' || m, printf('%016x', hash(i)), 'synth', m, 0, 'ok',
              CASE m WHEN 'cot' THEN 'Counting them again gives ' || (i % 97) || '. The answer is ' || (i % 97) || '.'
                     ELSE 'total = ' || (i % 97) || chr(10) || 'ans = total' END, 120, 40, 0.0001
       FROM range($problems) t(i), (SELECT unnest($modes) AS m) WHERE i % $every = 0""",
    """INSERT INTO executions (request_key, sandbox_version, status, answer, answer_number, program)
       SELECT printf('%016x', hash(i, 'pot', 'added')), '2', 'ok', (i % 97)::VARCHAR, i % 97,
              'total = ' || (i % 97) || chr(10) || 'ans = total'
       FROM range($problems) t(i) WHERE i % $every = 0 AND list_contains($modes, 'pot')""",
    """INSERT INTO verdicts (request_key, rule, rule_version, extracted, correct, reason, created_at)
       SELECT printf('%016x', hash(i, m, 'added')), 'strict', '2', (i % 97)::VARCHAR, i % 13 <> 0,
              CASE WHEN i % 13 <> 0 THEN 'correct' ELSE 'wrong-answer' END, TIMESTAMP '2026-01-03'
       FROM range($problems) t(i), (SELECT unnest($modes) AS m) WHERE i % $every = 0""",
)


@bench_app.command("remix")
def bench_remix(
    generations: int = typer.Option(1_000_000, "--generations", "-n", help="synthetic generations in the registry"),
    touched: float = typer.Option(0.1, "--touched", help="share of the problems the added teacher writes for"),
    cot_only: bool = typer.Option(False, "--cot-only", help="CoT only (one generation per problem)"),
    work: Optional[Path] = typer.Option(None, "--work", help="scratch folder (default: a temporary one, removed)"),
) -> None:
    """Adding a teacher: a version is built from `bench views`' registry, a second teacher's generations are added
    on a share of its problems, and the next version is mixed both ways in this process, in full and incrementally
    from its parent (`mixdistill.remix`); each mix's wall time, and a check that both selected the same rows."""
    import tempfile

    from mixdistill.corpus import build_version, fingerprint, mix_recipe
    from mixdistill.incremental import input_fingerprint
    from mixdistill.recipe import BuildRecipe, TeacherSpec, load_recipe
    from mixdistill.registry import Registry
    from mixdistill.remix import remix, remix_base

    if generations < 10:
        raise MixdistillError("--generations: the size must be at least 10")
    if not 0 < touched <= 0.5:
        raise MixdistillError("--touched: a share of the problems in (0, 0.5] (beyond half, builds mix in full)")
    root = work or Path(tempfile.mkdtemp(prefix="mixdistill-remix-"))
    try:
        registry = root / "remix.duckdb"
        registry.unlink(missing_ok=True)
        write_views_registry(registry, generations, cot_only)
        recipe = load_recipe(write_views_recipe(root, cot_only), BuildRecipe)
        modes = ["cot"] if cot_only else ["cot", "pot"]
        with Registry.open(registry, serve=False) as reg:
            started = time.perf_counter()
            _, first = build_version(reg, recipe, input_fingerprint(reg, recipe))
            first.ws.close()
            console.print(f"version 1.0.0 of {generations:,} generations mixed and registered in "
                          f"{time.perf_counter() - started:.1f} s", highlight=False)
            with reg.transaction():
                for sql in _ADDED_SQL:
                    params = {"problems": generations // len(modes), "modes": modes, "every": round(1 / touched)}
                    reg.con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})
                reg.refresh_latest("verdicts")
            added = TeacherSpec(name="added", provider="openai", model="gpt-added", license="apache-2.0",
                                source="synthetic, written by mixdistill bench remix")
            grown = recipe.model_copy(update={"version": "1.1.0", "teachers": [*recipe.teachers, added]})
            base = remix_base(reg, grown)
            if base is None:
                raise MixdistillError("bench remix: the grown recipe cannot be re-mixed from its parent")
            walls, prints = {}, {}
            mixes = {"full": lambda: mix_recipe(reg, grown), "incremental": lambda: remix(reg, grown, base)}
            for name, mix in mixes.items():
                started = time.perf_counter()
                with mix() as mixed:
                    walls[name] = time.perf_counter() - started
                    rules = [r[0] for r in mixed.ws.execute("SELECT rule FROM cand_rules ORDER BY 1")]
                    prints[name] = (fingerprint(mixed, grown, rules), mixed.stats)
    finally:
        if work is None:
            shutil.rmtree(root, ignore_errors=True)
    same = prints["full"] == prints["incremental"]
    console.print(f"re-mix at {generations:,} generations, a teacher added on {touched:.0%} of the problems: "
                  f"incremental {walls['incremental']:.1f} s = {walls['incremental'] / walls['full']:.1%} of the full "
                  f"mix ({walls['full']:.1f} s); same rows and statistics: {'yes' if same else 'NO'}", highlight=False)
    if not same:
        raise MixdistillError("bench remix: the incremental mix differs from the full one")
