"""Run untrusted PoT programs: a pool of warm, self-isolating sandbox slots, each forking one child per program.

Independent of the registry, so evaluation can execute student programs the same way. See `_worker` for the
per-program mechanics, `isolation` for the OS-level layers and `results` for how a child's bytes are read;
`Sandbox.isolation` says which layers are active on this machine.

    with Sandbox() as sb:
        results = sb.run_many(programs, progress=True)

Nothing a program does stalls `run_many`: a child that dies, forges or corrupts its result is `crashed` with the
reason; a slot that dies (or stops answering) is replaced, and the programs it had not answered run again one at a
time, each alone on a slot; a program that took a slot down twice is `crashed` and not retried.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import select
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import mixdistill
from mixdistill.cpu import available_cores
from mixdistill.errors import MixdistillError
from mixdistill.verify._worker import _HEADER, MAX_RESULT_BYTES, READ_MARK, REPLY, REQUEST, WALL_TIMEOUT, \
    empty_directory, preload_mask
from mixdistill.verify.results import STATUSES, ExecResult, Status, crashed, read_result

__all__ = ["SANDBOX_VERSION", "STATUSES", "ExecResult", "Sandbox", "SandboxError", "SandboxLimits", "Status"]

# Bump when a change can alter a program's status or answer; stored with every execution row.
# 2: `crashed`; bool and complex answers are not numbers; the number is read from the answer's text.
SANDBOX_VERSION = "2"


class SandboxError(MixdistillError):
    """The sandbox could not start its workers."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits. `timeout_s` is wall-clock (the child is SIGKILLed); `cpu_s` is CPU time.

    The defaults suit math word problems, whose programs run in microseconds: a program still busy after a second of
    CPU is almost always a loop that never ends, and each one costs the full limit. The PoT repo allowed 5 s; pass
    larger limits to reproduce it (one published GSM8K program brute-forces 341^3 cases in about 2 s).
    """

    timeout_s: float = 2.0
    cpu_s: float = 1.0
    memory_mb: int = 512  # address space a program may add to the warm worker's
    file_mb: int = 1  # RLIMIT_FSIZE: largest file a program may write in its scratch directory
    scratch_mb: int = 8  # the whole scratch directory (a tmpfs per slot, where the machine allows mounting one)
    max_output_chars: int = 2000  # stdout/stderr kept (stdout_head)
    max_source_bytes: int = 1_000_000  # longer programs are refused without running
    python_guard: bool = True  # the audit-hook tripwire; off only to test that the OS-level layers hold alone


DEPTH = 16  # programs queued per slot, so a zygote never waits for the host
# While every busy slot still has this many programs queued, the host naps before reading: replies (one per program)
# pile up in the pipes and are read in one go, so the host takes fewer wake-ups from the slots' CPUs.
COALESCE_QUEUED, COALESCE_S = 4, 0.003
CLOSE_GRACE_S = 0.2  # `close()` lets idle slots exit on their own this long, then kills what is left


@dataclass
class _Proc:
    popen: subprocess.Popen
    in_fd: int
    out_fd: int
    outbox: bytearray = field(default_factory=bytearray)
    inbox: bytearray = field(default_factory=bytearray)
    pending: deque = field(default_factory=deque)  # program indices sent, answered in this order
    solo: bool = False  # running one retried program alone
    last_progress: float = field(default_factory=time.monotonic)
    events: int = selectors.EVENT_READ  # what the selector watches now (changed only when it must)


_LOOP_LINE = re.compile(r"^([ \t]*)(?:for|while)\b", re.M)


def looks_long(program: str) -> bool:
    """Whether a program may run long: it has a `while` loop (the usual never-ending one) or loops nested in loops
    (a brute-force search: two of the four published programs that hit the CPU limit)."""
    if "while" in program:
        return True
    depths = [len(m.group(1).expandtabs()) for m in _LOOP_LINE.finditer(program)]
    return any(b > a for a, b in zip(depths, depths[1:]))


def default_slots() -> int:
    """One slot per core this process may run on. The work is CPU-bound (forks and copy-on-write faults), and with
    `DEPTH` programs queued per slot no zygote waits for the host, so more slots only add contention: on 2 cores,
    2 slots ran the published programs that end ~20% faster than 4, at ~20% less CPU a program
    (README, "Benchmark: `mixdistill bench sandbox`")."""
    return available_cores()


def _slot_cpu(index: int) -> int | None:
    """The core slot `index` is pinned to (round robin over the cores this process may use), so that its zygote,
    and each child it forks, run on one core: a fork then wakes no idle core (an inter-processor interrupt, costly
    in a VM) and the child's copy-on-write copies come from that core's cache. Measured on 2 cores: ~12% more
    programs per second, ~8% less CPU a program (README, "Benchmark: `mixdistill bench sandbox`"). None where
    affinity is not supported."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    return cores[index % len(cores)]


class Sandbox:
    """A context manager holding `workers` warm slots (default: `default_slots()`). Programs stream to slots one by
    one, up to `DEPTH` queued per slot."""

    def __init__(self, workers: int | None = None, limits: SandboxLimits | None = None):
        self.n_workers = workers or default_slots()
        self.limits = limits or SandboxLimits()
        self.isolation: dict[str, str] = {}
        self._procs: list[_Proc] = []
        self._scratch_root: str | None = None
        self._sel: selectors.BaseSelector | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Sandbox":
        if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
            raise SandboxError("the PoT sandbox needs Linux 5.3 or newer (pidfd, namespaces, seccomp, Landlock)")
        self._scratch_root = tempfile.mkdtemp(prefix="mixdistill-sandbox-")
        os.chmod(self._scratch_root, 0o711)  # children run as their slot's uid: they must reach their scratch dir
        self._sel = selectors.DefaultSelector()
        try:
            for i in range(self.n_workers):
                self._procs.append(self._spawn(i))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self, index: int) -> _Proc:
        from mixdistill.verify.isolation import SLOT_UID_BASE  # imports ctypes: only when a pool starts

        scratch = os.path.join(self._scratch_root, f"w{index}-{time.monotonic_ns()}")
        os.mkdir(scratch, 0o700)
        lim = self.limits
        cfg = {
            **_seccomp_filters(),
            "scratch": scratch,
            "uid": SLOT_UID_BASE + index,
            "home": os.path.expanduser("~"),  # the host user's (slots run with a clean environment): hidden from programs
            "timeout_s": lim.timeout_s,
            "cpu_s": lim.cpu_s,
            "memory_bytes": lim.memory_mb << 20,
            "file_bytes": lim.file_mb << 20,
            "scratch_bytes": lim.scratch_mb << 20,
            "max_output": lim.max_output_chars,
            "python_guard": lim.python_guard,
            "cpu": _slot_cpu(index),
        }
        # A clean environment: no API keys or tokens reach a program. LD_BIND_NOW resolves every symbol of the
        # interpreter and its extensions once, in the slot, rather than in each child, where the lazy binding wrote
        # to shared pages (~13 copy-on-write faults a program of ~380).
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "LD_BIND_NOW": "1"}
        log = os.path.join(self._scratch_root, f"worker{index}.log")
        with open(log, "ab") as stderr:  # appended: a replaced slot's last words stay
            popen = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(cfg), _PACKAGE_ROOT],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                env=env, cwd=scratch, close_fds=True, start_new_session=True,
            )
        proc = _Proc(popen, popen.stdin.fileno(), popen.stdout.fileno())
        ready = self._read_ready(proc, timeout=60)
        if not ready or not ready.get("ready"):
            self._kill(proc)
            with open(log, encoding="utf-8", errors="replace") as f:
                tail = f.read().strip().splitlines()[-1:] or ["no output"]
            raise SandboxError(f"sandbox worker {index} did not start ({sys.executable}): {tail[0]}")
        self.isolation = ready["isolation"]
        fl = fcntl.fcntl(proc.in_fd, fcntl.F_GETFL)
        fcntl.fcntl(proc.in_fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self._sel.register(proc.out_fd, selectors.EVENT_READ, proc)
        return proc

    def close(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:  # end of input: an idle zygote returns, its slot reaps it and exits, so the host's
            try:            # rusage counts every sandbox process (`bench sandbox` reports CPU per program)
                proc.popen.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + CLOSE_GRACE_S
        for proc in procs:
            try:
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # busy with a program: killed below
            self._stop(proc)
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self._scratch_root:
            remove_tree(self._scratch_root)
            self._scratch_root = None

    def _stop(self, proc: _Proc) -> None:
        try:
            self._sel.unregister(proc.out_fd)
        except (KeyError, ValueError, AttributeError):
            pass
        self._kill(proc)

    @staticmethod
    def _kill(proc: _Proc) -> None:
        if proc.popen.poll() is None:  # (once reaped, its pid could be another process's: never signalled then)
            try:  # slots hold nothing worth a graceful stop; the group takes the zygote and a running child with it
                os.killpg(proc.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.popen.wait()
        for f in (proc.popen.stdin, proc.popen.stdout):
            try:
                f.close()
            except OSError:
                pass

    # ------------------------------------------------------------------ running
    def run(self, program: str) -> ExecResult:
        return self.run_many([program])[0]

    def run_many(self, programs: Sequence[str], progress: bool = False) -> list[ExecResult]:
        """Run every program (each in its own child process); results in input order. Always returns."""
        if not self._procs:
            raise SandboxError("the sandbox is not started: use `with Sandbox() as sb:`")
        results: list[ExecResult | None] = [None] * len(programs)
        encoded: dict[int, bytes] = {}
        todo: deque[int] = deque()
        for i, program in enumerate(programs):
            refused = self._refuse(program)
            if refused is None:
                todo.append(i)
                source = program.encode("utf-8", "replace")
                encoded[i] = REQUEST.pack(i, preload_mask(program), len(source)) + source
            else:
                results[i] = refused
        # Programs that may run long (`looks_long`) start first, at most one queued per slot, so their seconds overlap
        # the batch on every CPU instead of ending it, or piling up behind each other on one slot. Results keep the
        # input order; each program runs alone in its own fork either way.
        long = {i for i in todo if looks_long(programs[i])}
        run = _Run(results, encoded, deque(i for i in todo if i not in long), deque(sorted(long)), long)
        bar = _progress(len(programs), progress)
        if bar:
            bar.update(bar.task_ids[0], advance=len(programs) - len(todo))
        stall = 2 * self.limits.timeout_s + 30.0  # a slot silent this long with work queued is replaced
        try:
            while run.todo or run.long or run.retry or any(p.pending for p in self._procs):
                for index, proc in enumerate(self._procs):
                    self._feed(proc, run)
                    self._flush(index, proc, run)
                for key, events in self._sel.select(timeout=1.0):
                    proc = key.data
                    index = self._procs.index(proc)
                    if events & selectors.EVENT_WRITE:
                        self._flush(index, proc, run)
                    if events & selectors.EVENT_READ and self._procs[index] is proc:
                        finished = self._receive(index, proc, run)
                        if bar and finished:
                            bar.update(bar.task_ids[0], advance=finished)
                now = time.monotonic()
                for index, proc in enumerate(self._procs):
                    if proc.pending and now - proc.last_progress > stall:
                        self._replace_dead(index, proc, run, "stopped answering")
                busy = [len(p.pending) for p in self._procs if p.pending]
                if busy and min(busy) >= COALESCE_QUEUED and not any(p.outbox for p in self._procs):
                    time.sleep(COALESCE_S)
        finally:
            if bar:
                bar.stop()
        return results  # type: ignore[return-value]

    def _feed(self, proc: _Proc, run: "_Run") -> None:
        """Queue programs on a slot: retried ones alone on an idle slot (they go first), others up to DEPTH."""
        if proc.solo and proc.pending:
            return
        proc.solo = False
        if run.retry:
            if not proc.pending:
                i = run.retry.popleft()
                proc.solo = True
                self._send(proc, run, i)
            return
        if run.long and not any(i in run.long_ids for i in proc.pending):
            self._send(proc, run, run.long.popleft())
        while run.todo and len(proc.pending) < DEPTH:
            self._send(proc, run, run.todo.popleft())

    def _send(self, proc: _Proc, run: "_Run", i: int) -> None:
        if not proc.pending:
            proc.last_progress = time.monotonic()
        proc.pending.append(i)
        proc.outbox += run.encoded[i]

    def _refuse(self, program) -> ExecResult | None:
        if not isinstance(program, str):
            kind = type(program).__name__
            return ExecResult("error", error_class="InvalidProgram", error_message=f"not text: {kind}")
        if len(program) > self.limits.max_source_bytes:
            return ExecResult(
                "error", error_class="ProgramTooLarge",
                error_message=f"{len(program)} characters > limit {self.limits.max_source_bytes}",
            )
        return None

    def _flush(self, index: int, proc: _Proc, run: "_Run") -> None:
        if self._procs[index] is not proc:
            return
        if proc.outbox:
            try:
                n = os.write(proc.in_fd, proc.outbox)
                del proc.outbox[:n]
            except BlockingIOError:
                pass
            except (BrokenPipeError, OSError):
                proc.outbox.clear()  # the slot is gone: its end of stream is seen on the read side
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if proc.outbox else 0)
        if events != proc.events:
            self._sel.modify(proc.out_fd, events, proc)
            proc.events = events

    def _receive(self, index: int, proc: _Proc, run: "_Run") -> int:
        try:
            chunk = os.read(proc.out_fd, 1 << 20)
        except OSError:
            chunk = b""
        if not chunk:
            return self._replace_dead(index, proc, run, "died")
        proc.inbox += chunk
        finished = 0
        while len(proc.inbox) >= REPLY.size:
            program_id, outcome, status, wall_ns, n = REPLY.unpack_from(proc.inbox)
            if n > MAX_RESULT_BYTES or not proc.pending or program_id != proc.pending[0]:
                return finished + self._replace_dead(index, proc, run, "sent a reply out of step")
            if len(proc.inbox) < REPLY.size + n:
                break
            data = bytes(proc.inbox[REPLY.size : REPLY.size + n])
            del proc.inbox[: REPLY.size + n]
            proc.pending.popleft()
            proc.last_progress = time.monotonic()
            run.results[program_id] = self._result(data, outcome, status, wall_ns / 1e9)
            finished += 1
        return finished

    def _result(self, data: bytes, outcome: int, status: int, wall_s: float) -> ExecResult:
        if not data.startswith(READ_MARK):
            return crashed("the program's process ended before it read its program", wall_s)
        if outcome == WALL_TIMEOUT:
            return ExecResult("timeout", error_class="Timeout",
                              error_message=f"wall time limit {self.limits.timeout_s}s exceeded", runtime_s=wall_s)
        return read_result(data[len(READ_MARK):], status, wall_s, self.limits.cpu_s)

    def _replace_dead(self, index: int, proc: _Proc, run: "_Run", how: str) -> int:
        """A slot died or misbehaved: the program it was running is charged with it, every program it had not
        answered runs again alone, and one charged twice is `crashed`. A fresh slot takes its place."""
        self._stop(proc)
        lost = list(proc.pending)
        finished = 0
        if lost:
            run.crashes[lost[0]] += 1
            for i in reversed(lost):
                if run.crashes[i] >= 2:
                    run.results[i] = crashed(f"the sandbox worker {how} twice while running this program")
                    finished += 1
                else:
                    run.retry.appendleft(i)
        self._procs[index] = self._spawn(index)
        return finished

    def _read_ready(self, proc: _Proc, timeout: float):
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.out_fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(proc.out_fd, 1 << 16)
            if not chunk:
                return None
            buf += chunk
            if len(buf) >= _HEADER.size:
                (n,) = _HEADER.unpack_from(buf)
                if n > 1 << 16:
                    return None
                if len(buf) >= _HEADER.size + n:
                    return json.loads(buf[_HEADER.size : _HEADER.size + n])
        return None


@dataclass
class _Run:
    results: list
    encoded: dict
    todo: deque
    long: deque  # programs that may run long (`looks_long`): at most one queued per slot
    long_ids: set
    retry: deque = field(default_factory=deque)  # programs whose slot died: each runs alone
    crashes: Counter = field(default_factory=Counter)  # slot deaths charged to a program


def remove_tree(path: str) -> None:
    """Delete a directory tree of any depth (a program's 3,000 nested directories included); never raises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        empty_directory(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        pass


# The slot runs the same mixdistill as the host (not whichever one `python -I` would find installed).
_PACKAGE_ROOT = str(Path(mixdistill.__file__).resolve().parent.parent)
_BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv.pop()); "
              "from mixdistill.verify._worker import main; main()")


@functools.lru_cache(maxsize=1)
def _seccomp_filters() -> dict[str, str]:
    """BPF for the worker and per-program filters, compiled once per host process (hex, for the worker's argv)."""
    from mixdistill.verify import isolation

    try:
        return {
            "seccomp_worker": isolation.compile_filter(isolation.WORKER_DENY).hex(),
            "seccomp_child": isolation.compile_filter(isolation.CHILD_DENY).hex(),
        }
    except (ImportError, OSError, RuntimeError) as e:  # libseccomp missing: the worker reports seccomp as off
        return {"seccomp_error": str(e)[:200]}


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from mixdistill.progress import Progress

    bar = Progress(TextColumn("sandbox"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.add_task("run", total=total)
    bar.start()
    return bar
