"""`mixdistill verify` and `mixdistill bench sandbox`."""

from __future__ import annotations

import os
from typing import Optional

import typer
from rich.table import Table

from mixdistill.cli.common import app, bench_app, console, progress_enabled, state
from mixdistill.errors import MixdistillError
from mixdistill.shard import Shard
from mixdistill.verify.rules import RULES, get_rule
from mixdistill.verify.sandbox import SANDBOX_VERSION, SandboxLimits, default_slots

_DEFAULTS = SandboxLimits()


def _limits(timeout: float, cpu: float, memory_mb: int) -> SandboxLimits:
    if timeout <= 0 or cpu <= 0 or memory_mb <= 0:
        raise MixdistillError("--timeout, --cpu and --memory-mb must be positive")
    return SandboxLimits(timeout_s=timeout, cpu_s=cpu, memory_mb=memory_mb)


@app.command()
def verify(
    rule: list[str] = typer.Option(["strict"], "--rule", "-r", help=f"equivalence rule(s): {', '.join(RULES)}"),
    timeout: float = typer.Option(_DEFAULTS.timeout_s, "--timeout", help="wall-clock seconds per program"),
    cpu: float = typer.Option(_DEFAULTS.cpu_s, "--cpu", help="CPU seconds per program (RLIMIT_CPU)"),
    memory_mb: int = typer.Option(_DEFAULTS.memory_mb, "--memory-mb", help="memory a program may allocate"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="sandbox workers (default: one per CPU core)"),
    cot_reading: str = typer.Option("stated", "--cot-reading", help="CoT answer reading: stated | expression"),
    pot_convention: list[str] = typer.Option([], "--pot-convention",
                                             help="opt-in PoT answer convention (repeatable): printed, first-of-tuple"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    shard: Optional[str] = typer.Option(None, "--shard", help="only generations of shard I of N (I/N, from 0)"),
) -> None:
    """Verify every generation that has no verdict from the rule's current version (never calls a teacher).

    PoT programs run in the sandbox (stored in `executions`, reused by later rule versions); CoT answers are
    extracted from the text; each verdict records the rule name and version.
    """
    from mixdistill.verify.pipeline import verify_pending
    from mixdistill.verify.sandbox import Sandbox

    rules = [get_rule(name, cot_reading, pot_convention) for name in rule]  # unknown names fail before anything runs
    part = Shard.parse(shard) if shard is not None else None
    limits = _limits(timeout, cpu, memory_mb)
    from mixdistill.registry import Registry
    with Registry.open(state.registry) as reg, Sandbox(workers=workers, limits=limits) as sb:
        for r in rules:
            s = verify_pending(reg, r.name, progress=progress_enabled(progress), sandbox=sb, cot_reading=cot_reading,
                               pot_conventions=r.pot_conventions, shard=part)
            acc = "n/a" if s.accuracy is None else f"{s.accuracy:.2%}"
            console.print(
                f"rule {s.rule} v{s.rule_version}: {s.verified} verified ({s.pending} pending), {s.correct} correct "
                f"({acc}); programs run {s.executed}, stored executions reused {s.reused_executions}; "
                f"{s.seconds:.1f}s",
                highlight=False,
            )
            if s.reasons:
                table = Table(title=f"verdict reasons ({s.rule})")
                table.add_column("reason")
                table.add_column("n", justify="right")
                for reason, n in s.reasons.most_common():
                    table.add_row(reason, str(n))
                console.print(table)
    audit = 'mixdistill sql "SELECT * FROM audit_failures"'
    console.print(f"sandbox v{SANDBOX_VERSION}; failure classes: {audit}", highlight=False)


@bench_app.command("sandbox")
def bench_sandbox(
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="parallelism, all three ways (default: one per CPU core)"),
    timeout: float = typer.Option(_DEFAULTS.timeout_s, "--timeout", help="wall-clock seconds per program"),
    cpu: float = typer.Option(_DEFAULTS.cpu_s, "--cpu", help="CPU seconds per program, all three ways"),
    naive_limit: int = typer.Option(0, "--naive-limit", help="naive way: first N programs only (0: all)"),
) -> None:
    """Time the 2,317 published Codex PoT programs: in-process exec (ceiling), a fresh python per program (naive),
    and the sandbox; print programs/s and ratios. Target: sandbox >= 500/s and >= 10x the naive way."""
    from mixdistill.verify import bench

    programs = bench.load_published_programs(state.data_dir)
    n_workers = workers or default_slots()
    limits = _limits(timeout, cpu, _DEFAULTS.memory_mb)
    console.print(
        f"{len(programs)} programs, {n_workers} at a time, {os.cpu_count()} CPUs; limits {cpu}s CPU and {timeout}s"
        " wall per program, the same for all three ways", highlight=False,
    )
    ceiling = bench.time_in_process(programs, n_workers, timeout, cpu)
    naive_programs = programs[:naive_limit] if naive_limit > 0 else programs
    naive = bench.time_naive(naive_programs, n_workers, timeout, cpu)
    sandbox = bench.time_sandbox(programs, n_workers, limits)
    # Programs that never end cost the full limit in every method; the same comparison without them shows the
    # per-program cost itself.
    ending = [programs[i] for i in sandbox.finished]
    ceiling_ending = bench.time_in_process(ending, n_workers, timeout, cpu)
    naive_ending = bench.time_naive(ending[:naive_limit] if naive_limit > 0 else ending, n_workers, timeout, cpu)
    sandbox_ending = bench.time_sandbox(ending, n_workers, limits)

    sb = sandbox.timing
    table = Table(title="bench sandbox")
    for col in ("method", "programs", "seconds", "programs/s", "timeouts", "sandbox speed vs this"):
        table.add_column(col, justify="right" if col != "method" else "left")
    only = ", ending programs only"
    se = sandbox_ending.timing
    rows = [(ceiling, sb, ""), (naive, sb, ""), (sb, sb, ""),
            (ceiling_ending, se, only), (naive_ending, se, only), (se, se, only)]
    for t, ref, suffix in rows:
        table.add_row(t.method + suffix, str(t.programs), f"{t.seconds:.2f}", f"{t.rate:.0f}", str(t.timeouts),
                      f"{ref.rate / t.rate:.2f}x")
    console.print(table)
    console.print(f"sandbox pool start-up (once per run): {sandbox.startup_s:.2f}s; isolation: "
                  + ", ".join(f"{k}: {v}" for k, v in sandbox.isolation.items()), highlight=False)
    console.print(f"CPU per program, every sandbox process counted (start-up included; load-proof): "
                  f"{sandbox_ending.cpu_s / se.programs * 1e3:.2f} ms on the {se.programs} that end",
                  highlight=False)
    ok_rate, ok_ending = sb.rate >= 500, se.rate >= 900
    ok_ratio = sb.rate >= 10 * naive.rate
    console.print(
        f"targets (all {len(programs)} programs): >= 500 programs/s: {'met' if ok_rate else 'NOT met'} "
        f"({sb.rate:.0f}/s); >= 10x naive: {'met' if ok_ratio else 'NOT met'} ({sb.rate / naive.rate:.1f}x); "
        f"ceiling / sandbox: {ceiling.rate / sb.rate:.2f}x. Without the {sb.timeouts} that hit the limit: "
        f">= 900 programs/s: {'met' if ok_ending else 'NOT met'} ({se.rate:.0f}/s), "
        f"{se.rate / naive_ending.rate:.1f}x naive (ceiling {ceiling_ending.rate:.0f}/s)",
        highlight=False,
    )
