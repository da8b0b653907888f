"""Generation commands: `generate <recipe>`, `teachers`, `bench teachers`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

import mixdistill
from mixdistill.cli.common import app, bench_app, console, progress_enabled, state
from mixdistill.cli.core import frame_table
from mixdistill.cli.timing import timed_env
from mixdistill.errors import MixdistillError

if TYPE_CHECKING:  # the generation engine loads the provider SDKs: only the commands that generate import it
    from mixdistill.generate import GenerationReport
    from mixdistill.recipe import BuildRecipe

BENCH_KEY_ENV = "MIXDISTILL_BENCH_KEY"


def load_build_recipe(recipe: Path, build: bool = False) -> "BuildRecipe":
    """A build recipe with every check that can run before anything is paid for: the recipe itself (fields, teacher
    names and quotas, URLs), the names that live in higher layers (the rule) and, for `build`, the evaluation-split
    guard."""
    from mixdistill.recipe import BuildRecipe, load_for_run, load_recipe
    from mixdistill.verify.rules import get_rule

    spec = load_for_run(recipe, BuildRecipe) if build else load_recipe(recipe, BuildRecipe)
    try:
        get_rule(spec.rule)
    except MixdistillError as e:
        raise MixdistillError(f"{recipe}: rule: {e}") from None
    return spec


def report_table(report: GenerationReport) -> Table:
    table = Table(title=f"generation run {report.run_id} ({report.elapsed_s:.1f} s)")
    for col in ("teacher", "requests", "cached", "ok", "errors", "no recording", "tokens", "cost USD"):
        table.add_column(col, justify="left" if col == "teacher" else "right")
    for t in report.by_teacher.values():
        table.add_row(t.name, str(t.requests), str(t.cached), str(t.ok), str(t.errors), str(t.missing),
                      str(t.tokens), f"{t.cost_usd:.4f}")
    return table


@app.command()
def generate(
    recipe: Path = typer.Argument(..., help="build recipe (YAML)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    shard: Optional[str] = typer.Option(None, "--shard", help="only shard I of N (I/N, from 0) of the problems; "
                                        "merge shard registries with `mixdistill registry merge`"),
) -> None:
    """Ask the recipe's teachers for every request not already stored (generation only; no verification)."""
    from mixdistill.shard import Shard

    part = Shard.parse(shard) if shard is not None else None
    spec = load_build_recipe(recipe)  # before the engine (and the provider SDKs) are even imported
    from mixdistill.generate import plan_generation, preload, run_generation

    plan = plan_generation(spec, state.data_dir, part)  # validates keys, prompts and replay files before any write
    from mixdistill.registry import Registry
    preload(plan)
    with Registry.open(state.registry) as reg:
        report = run_generation(reg, spec, progress=progress_enabled(progress), data_dir=state.data_dir, plan=plan)
    console.print(report_table(report))
    console.print(
        f"{report.total} requests: {report.cached} cached, {report.sent} sent, {report.replayed} replayed "
        f"({report.ok} ok, {report.errors} errors), {report.missing} without a recording; "
        f"spent ${report.cost_usd:.4f} this run", highlight=False
    )
    for t in report.by_teacher.values():
        if t.unmatched:
            console.print(f"[yellow]{t.name}:[/] {t.unmatched} recorded questions match no problem of the recipe "
                          f"(first: {'; '.join(repr(q[:80]) for q in t.unmatched_examples)})", highlight=False)
    if report.stopped:
        console.print(f"[yellow]stopped early:[/] {report.stopped}; re-run to continue", highlight=False)
    if report.errors:
        console.print("requests that failed are stored with status 'error' and retried on the next run")


@app.command()
def teachers(
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="also show a recipe's teachers and their keys"),
) -> None:
    """Teachers known to the registry (models, calls, tokens, spend so far), and optionally a recipe's teachers."""
    if recipe is not None:
        from mixdistill.teachers import make_teacher

        spec = load_build_recipe(recipe)
        table = Table(title=f"teachers in {recipe}")
        for col in ("name", "provider", "model", "base_url / path", "key", "batch", "price in/out per Mtok"):
            table.add_column(col)
        for t in spec.teachers:
            teacher = make_teacher(t)
            env = teacher.key_env
            key = "-" if env is None else (f"${env} set" if os.environ.get(env) else f"[red]${env} missing[/]")
            price = teacher.prices
            shown = f"{price.input_per_mtok} / {price.output_per_mtok}" if price.known else "[yellow]unknown[/]"
            table.add_row(t.label, t.provider, t.model, str(t.base_url or t.path or ""), key, str(t.batch), shown)
        console.print(table)
    if not state.registry.exists():
        console.print(f"registry {state.registry} not created yet")
        return
    from mixdistill.registry import Registry
    with Registry.open(state.registry, read_only=True) as reg:
        df = reg.query(
            """
            SELECT t.name, t.provider, t.model, t.base_url,
                   count(g.request_key) AS calls, count_if(g.status = 'ok') AS ok, count_if(g.status <> 'ok') AS errors,
                   coalesce(sum(g.prompt_tokens), 0) AS prompt_tokens,
                   coalesce(sum(g.completion_tokens), 0) AS completion_tokens,
                   round(coalesce(sum(g.cost_usd), 0), 4) AS cost_usd,
                   (SELECT count(*) FROM batches b WHERE b.teacher_id = t.teacher_id AND b.status = 'submitted')
                       AS pending_batches
            FROM teachers t LEFT JOIN generations g USING (teacher_id)
            GROUP BY ALL ORDER BY t.name
            """
        )
    console.print(frame_table(df, 100, title=f"teachers in {state.registry}"))


# ---------------------------------------------------------------------- benchmark
def _fake_server_script() -> Path:
    path = Path(mixdistill.__file__).resolve().parents[1] / "tests" / "fakes" / "openai_server.py"
    if not path.is_file():
        raise MixdistillError(f"bench teachers needs a source checkout: {path} not found")
    return path


def _bench_recipe(tmp: Path, requests: int, concurrency: int, base_url: str) -> dict:
    rows = [
        {"id": f"q{i}", "question": f"Ann has {i} apples and buys {i % 7 + 2} more. How many apples does she have now?",
         "answer": i + i % 7 + 2}
        for i in range(requests)
    ]
    data = tmp / "bench.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return {
        "name": "bench-teachers",
        "tasks": [{"custom": {"name": "bench", "path": str(data), "question": "question", "answer": "answer",
                              "id": "id"}}],
        "teachers": [{"provider": "openai", "model": "gpt-4o-mini", "base_url": base_url,
                      "api_key_env": BENCH_KEY_ENV, "max_concurrency": concurrency, "max_retries": 0}],
        "modes": ["cot"],
        "samples": {"cot": 1},
    }


class _Server:
    """The fake OpenAI server in its own process; `window()` says when the requests since the last call were
    received (the first) and answered (the last), by the server's clock (`time.time()`, shared by every process)."""

    def __init__(self, latency: float):
        self.proc = subprocess.Popen([sys.executable, str(_fake_server_script()), "--latency", str(latency)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def window(self) -> tuple[int, float, float]:
        self.proc.stdin.write("window\n")
        self.proc.stdin.flush()
        w = json.loads(self.proc.stdout.readline())
        return w["requests"], w["first_received"], w["last_answered"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def _outside(server: _Server, started: float, ended: float) -> tuple[float, float]:
    """(seconds before the first request was received, seconds after the last was answered) of a run that began at
    `started` and ended at `ended` (`time.time()`)."""
    n, first, last = server.window()
    if not n:
        raise MixdistillError("benchmark invalid: the fake server saw no request")
    return first - started, ended - last


def _console_script() -> list[str]:
    """The `mixdistill` console script next to this interpreter (what users run), else `python -m mixdistill`."""
    script = Path(sys.executable).with_name("mixdistill")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mixdistill"]


def _whole_process(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of a whole `mixdistill ...` process, start-up and exit included."""
    t0 = time.perf_counter()
    done = subprocess.run(_console_script() + args, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise MixdistillError(f"benchmark invalid: mixdistill {' '.join(args[:3])} exited {done.returncode}: "
                              f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return took


async def _raw_floor(url: str, bodies: list[bytes], concurrency: int) -> None:
    """The floor: a bare aiohttp client posting the same bodies at the same concurrency, reading each JSON answer."""
    import aiohttp

    queue = list(reversed(bodies))
    headers = {"Authorization": "Bearer sk-bench-not-a-secret", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            while queue:
                async with session.post(url, data=queue.pop()) as response:
                    json.loads(await response.read())

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _timed(fn, *args):
    """(wall seconds, CPU seconds of this process) of `fn(*args)`; the fake server runs in another process."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


@bench_app.command("teachers")
def bench_teachers(
    requests: int = typer.Option(2000, "--requests", "-n", min=1),
    concurrency: int = typer.Option(64, "--concurrency", "-c", min=1),
    latency: float = typer.Option(0.2, "--latency", help="seconds the fake server takes per request"),
    cold_runs: int = typer.Option(3, "--cold-runs", min=1, help="cold `mixdistill generate` processes (median shown)"),
) -> None:
    """Throughput and client CPU per request against the fake OpenAI server (its own process), beside a raw aiohttp
    client sending the same bodies to the same server in the same run (the floor); a cached re-run; and cold
    `mixdistill generate` processes of the same build, with their bytecode compiled as an installed copy has it
    (`cli.timing`): their time outside the requests, the median run shown with every run's figure."""
    import polars as pl
    import yaml

    from mixdistill.generate import _run, plan_generation, run_generation
    from mixdistill.recipe import BuildRecipe
    from mixdistill.registry import Registry

    server = _Server(latency)
    try:
        os.environ[BENCH_KEY_ENV] = "sk-bench-not-a-secret"
        with tempfile.TemporaryDirectory() as tmp:
            spec = _bench_recipe(Path(tmp), requests, concurrency, f"http://127.0.0.1:{server.port}/v1")
            recipe = BuildRecipe.model_validate(spec)
            plan = plan_generation(recipe)
            (teacher,) = plan.teachers
            bodies = [teacher.body_json([r]) for r in plan.requests[teacher.teacher_id]]
            url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
            _, raw, raw_cpu = _timed(_run, _raw_floor(url, bodies, concurrency))
            server.window()
            with Registry.open(Path(tmp) / "bench.duckdb") as reg:
                started = time.time()
                first, cold, cold_cpu = _timed(run_generation, reg, recipe, False)
                before, after = _outside(server, started, time.time())
                again, warm, _ = _timed(run_generation, reg, recipe, False)
            env = timed_env(Path(tmp))
            untimed = Path(tmp) / "untimed"  # a run of one request fills the bytecode cache (`cli.timing`)
            untimed.mkdir()
            one = _bench_recipe(untimed, 1, 1, spec["teachers"][0]["base_url"])
            (untimed / "bench.yaml").write_text(yaml.safe_dump(one), encoding="utf-8")
            _whole_process(["--registry", str(untimed / "registry.duckdb"), "generate", str(untimed / "bench.yaml"),
                            "--no-progress"], env)
            _whole_process(["generate", "--help"], env)
            server.window()
            (Path(tmp) / "bench.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
            runs = []  # (outside, whole process, before the first request, after the last answer)
            for i in range(cold_runs):
                started = time.time()
                process = _whole_process(["--registry", str(Path(tmp) / f"cold{i}.duckdb"), "generate",
                                          str(Path(tmp) / "bench.yaml"), "--no-progress"], env)
                p_before, p_after = _outside(server, started, time.time())
                runs.append((p_before + p_after, process, p_before, p_after))
            p_outside, process, p_before, p_after = sorted(runs)[(len(runs) - 1) // 2]
            startup = _whole_process(["generate", "--help"], env)
    finally:
        server.close()
    if first.ok != requests or again.sent != 0:
        raise MixdistillError(f"benchmark invalid: {first.ok}/{requests} ok on the first run, {again.sent} sent on the re-run")
    ideal = concurrency / latency
    rate, raw_rate = requests / cold, requests / raw
    cpu_ms, raw_cpu_ms = 1000 * cold_cpu / requests, 1000 * raw_cpu / requests
    each = ", ".join(f"{r[0]:.2f}" for r in runs)
    df = pl.DataFrame(
        {
            "metric": ["requests", "concurrency", "server latency s", "request body bytes", "ideal req/s",
                       "mixdistill s", "mixdistill req/s", "mixdistill share of ideal", "mixdistill CPU ms/request",
                       "raw aiohttp s", "raw aiohttp req/s", "raw share of ideal", "raw CPU ms/request",
                       "mixdistill share of raw", "cached re-run s", "cached speed-up",
                       "run_generation s before first request", "run_generation s after last answer",
                       "cold generate process s", "process s before first request", "process s after last answer",
                       "process s outside requests", f"outside requests, {cold_runs} runs", "console script start s"],
            "value": [str(requests), str(concurrency), f"{latency}", str(len(bodies[0])), f"{ideal:.1f}",
                      f"{cold:.2f}", f"{rate:.1f}", f"{rate / ideal:.1%}", f"{cpu_ms:.2f}",
                      f"{raw:.2f}", f"{raw_rate:.1f}", f"{raw_rate / ideal:.1%}", f"{raw_cpu_ms:.2f}",
                      f"{rate / raw_rate:.1%}", f"{warm:.3f}", f"{cold / warm:.0f}x",
                      f"{before:.3f}", f"{after:.3f}",
                      f"{process:.2f}", f"{p_before:.3f}", f"{p_after:.3f}", f"{p_outside:.3f}", each,
                      f"{startup:.3f}"],
        }
    )
    console.print(frame_table(df, 30, title="bench teachers (fake OpenAI server, loopback)"))
    console.print(
        f"share of ideal {rate / ideal:.1%} (target >= 90% at 64 x 200 ms), of the raw client {rate / raw_rate:.1%}; "
        f"client CPU {cpu_ms:.2f} ms/request (target <= 0.8; raw {raw_cpu_ms:.2f}); "
        f"cached re-run {cold / warm:.0f}x faster (target >= 50x); "
        f"cold `mixdistill generate` process {p_outside:.2f} s outside the requests (target < 1 s; median of "
        f"{cold_runs}: {each}; start-up {p_before:.2f} s to the first request, {p_after:.2f} s after the last answer; "
        f"`generate --help` {startup:.2f} s)", highlight=False,
    )
