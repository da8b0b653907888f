"""`mixdistill bench sandbox`: the published Codex PoT programs timed three ways, with the same CPU and wall limits.

1. in-process `exec`, no isolation (the ceiling): `workers` forked processes, each exec-ing its share in turn under
   SIGPROF/SIGALRM timers;
2. one fresh `python` subprocess per program (the naive way), `workers` at a time;
3. the sandbox.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mixdistill.errors import MixdistillError
from mixdistill.verify.sandbox import Sandbox, SandboxLimits

POT_OUTPUTS = (
    "program-of-thoughts/outputs/svamp_s0_e-1_11_24_14_38.jsonl",
    "program-of-thoughts/outputs/gsm8K_s0_e-1_11_17_10_20.jsonl",
)


def load_published_programs(data_dir: Path) -> list[str]:
    """The Codex greedy programs of the PoT repo (SVAMP 999 + GSM8K 1318), prompt lines skipped."""
    programs = []
    for rel in POT_OUTPUTS:
        path = data_dir / rel
        if not path.is_file():
            raise MixdistillError(f"missing benchmark file {path} (set --data-dir or $MIXDISTILL_DATA)")
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    if isinstance(rec.get("generated"), list) and rec["generated"]:
                        programs.append(rec["generated"][0])
    return programs


@dataclass(frozen=True)
class Timing:
    method: str
    programs: int
    seconds: float
    timeouts: int

    @property
    def rate(self) -> float:
        return self.programs / self.seconds if self.seconds > 0 else float("inf")


class _Alarm(BaseException):
    pass


def _exec_share(programs: list[str], timeout_s: float, cpu_s: float, out_fd: int) -> None:
    """Child of the ceiling run: exec each program in this process under the same CPU and wall limits as the
    sandbox (SIGPROF / SIGALRM timers); report how many hit a limit."""

    def on_limit(signum, frame):
        raise _Alarm

    signal.signal(signal.SIGALRM, on_limit)
    signal.signal(signal.SIGPROF, on_limit)
    timeouts = 0
    sink = io.StringIO()
    for program in programs:
        signal.setitimer(signal.ITIMER_PROF, cpu_s)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                exec(compile(program, "<program>", "exec"), {"__name__": "__main__"})
        except _Alarm:
            timeouts += 1
        except BaseException:  # noqa: BLE001  (the ceiling counts time, not outcomes)
            pass
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
        sink.seek(0)
        sink.truncate()
    os.write(out_fd, str(timeouts).encode())


def time_in_process(programs: list[str], workers: int, timeout_s: float, cpu_s: float) -> Timing:
    shares = [programs[i::workers] for i in range(workers)]
    start = time.perf_counter()
    children = []
    for share in shares:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover  (child)
            os.close(r)
            try:
                _exec_share(share, timeout_s, cpu_s, w)
            finally:
                os._exit(0)
        os.close(w)
        children.append((pid, r))
    timeouts = 0
    for pid, r in children:
        data = os.read(r, 64)
        os.close(r)
        os.waitpid(pid, 0)
        timeouts += int(data or 0)
    return Timing("in-process exec (no isolation, ceiling)", len(programs), time.perf_counter() - start, timeouts)


# the same CPU limit as the sandbox: SIGPROF's default action ends the process
_NAIVE_RUNNER = (
    "import signal, sys; signal.setitimer(signal.ITIMER_PROF, float(sys.argv[1])); g = {}; "
    "exec(compile(sys.stdin.read(), '<program>', 'exec'), g); print(repr(g.get('ans')))"
)


def time_naive(programs: list[str], workers: int, timeout_s: float, cpu_s: float) -> Timing:
    def one(program: str) -> bool:
        try:
            done = subprocess.run([sys.executable, "-c", _NAIVE_RUNNER, str(cpu_s)], input=program,
                                  capture_output=True, text=True, timeout=timeout_s, env={"PATH": "/usr/bin:/bin"})
            return done.returncode == -signal.SIGPROF
        except subprocess.TimeoutExpired:
            return True

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        timeouts = sum(pool.map(one, programs))
    return Timing("fresh python subprocess per program (naive)", len(programs), time.perf_counter() - start, timeouts)


@dataclass(frozen=True)
class SandboxRun:
    timing: Timing
    startup_s: float  # paid once per run, reported apart
    isolation: dict
    finished: list[int]  # indices of the programs that ended within the limits
    cpu_s: float  # CPU time of every process of the run (host, slots, zygotes, children; start-up included)


def _cpu_s() -> float:
    """This process's CPU time and that of its reaped descendants: a slot reaps its zygote, which reaps each child,
    so once the pool is closed every sandbox process is counted."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_sandbox(programs: list[str], workers: int, limits: SandboxLimits) -> SandboxRun:
    t0, cpu0 = time.perf_counter(), _cpu_s()
    with Sandbox(workers=workers, limits=limits) as sb:
        startup = time.perf_counter() - t0
        start = time.perf_counter()
        results = sb.run_many(programs)
        seconds = time.perf_counter() - start
        isolation = dict(sb.isolation)
    finished = [i for i, r in enumerate(results) if r.status != "timeout"]
    timing = Timing("sandbox (warm workers, fork per program)", len(programs), seconds, len(programs) - len(finished))
    return SandboxRun(timing, startup, isolation, finished, _cpu_s() - cpu0)
