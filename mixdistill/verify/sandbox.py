"""Run untrusted PoT programs: a pool of warm, self-isolating worker processes that fork one child per program.

Independent of the registry, so evaluation can execute student programs the same way. See `_worker` for the
per-program mechanics and `isolation` for the OS-level layers; `Sandbox.isolation` says which layers are active on
this machine.

    with Sandbox() as sb:
        results = sb.run_many(programs, progress=True)
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Literal, Sequence

from mixdistill.errors import MixdistillError
from mixdistill.verify._worker import _HEADER

# Bump when a change can alter a program's status or answer; stored with every execution row.
SANDBOX_VERSION = "1"

Status = Literal["ok", "error", "timeout", "memory", "forbidden", "no-answer"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "forbidden", "no-answer")


class SandboxError(MixdistillError):
    """The sandbox could not start its workers."""


@dataclass(frozen=True)
class ExecResult:
    """What running one program produced. `answer` is the text of `ans` (or `solution()`'s return); `answer_number`
    is set only for numeric answers (bool/int/float/Fraction/Decimal/numpy/sympy numbers, NaN and inf included)."""

    status: Status
    answer: str | None = None
    answer_number: float | None = None
    answer_kind: str | None = None  # number | bool | str | list | tuple | dict | set | complex | expression | object
    stdout_head: str = ""
    error_class: str | None = None
    error_message: str | None = None
    runtime_s: float = 0.0

    def to_row(self) -> dict:
        row = asdict(self)
        row.pop("answer_kind")
        return row


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
    max_output_chars: int = 2000  # stdout/stderr kept (stdout_head)
    max_source_bytes: int = 1_000_000  # longer programs are refused without running
    python_guard: bool = True  # the audit-hook tripwire; off only to test that the OS-level layers hold alone


@dataclass
class _Proc:
    popen: subprocess.Popen
    in_fd: int
    out_fd: int
    outbox: bytearray = field(default_factory=bytearray)
    inbox: bytearray = field(default_factory=bytearray)
    pending: deque = field(default_factory=deque)  # batches sent (lists of program indices), in order


class Sandbox:
    """A context manager holding `workers` warm worker processes (default: two per CPU, so one worker's fork and
    reaping overlap another's program)."""

    def __init__(self, workers: int | None = None, limits: SandboxLimits | None = None, batch: int = 16):
        self.n_workers = workers or 2 * (os.cpu_count() or 1)
        self.limits = limits or SandboxLimits()
        self.batch = batch  # programs per message: fewer wake-ups of the host on a machine with few cores
        self._solo: set[int] = set()  # programs from a batch whose worker died: rerun one per batch
        self.isolation: dict[str, str] = {}
        self._procs: list[_Proc] = []
        self._scratch_root: str | None = None
        self._sel: selectors.BaseSelector | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Sandbox":
        if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
            raise SandboxError("the PoT sandbox needs Linux 5.3 or newer (pidfd, namespaces, seccomp, Landlock)")
        self._scratch_root = tempfile.mkdtemp(prefix="mixdistill-sandbox-")
        os.chmod(self._scratch_root, 0o711)  # children may run as nobody: they must reach their own scratch dir
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
        scratch = os.path.join(self._scratch_root, f"w{index}-{time.monotonic_ns()}")
        os.mkdir(scratch, 0o700)
        lim = self.limits
        cfg = {
            **_seccomp_filters(),
            "scratch": scratch,
            "timeout_s": lim.timeout_s,
            "cpu_s": lim.cpu_s,
            "memory_bytes": lim.memory_mb << 20,
            "file_bytes": lim.file_mb << 20,
            "max_output": lim.max_output_chars,
            "python_guard": lim.python_guard,
        }
        # a clean environment: no API keys or tokens reach a program
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        log = os.path.join(self._scratch_root, f"worker{index}.log")
        with open(log, "wb") as stderr:
            popen = subprocess.Popen(
                [sys.executable, "-I", "-m", "mixdistill.verify._worker", json.dumps(cfg)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                env=env, cwd=scratch, close_fds=True, start_new_session=True,
            )
        proc = _Proc(popen, popen.stdin.fileno(), popen.stdout.fileno())
        ready = self._read_blocking(proc, timeout=60)
        if not ready or not ready.get("ready"):
            popen.kill()
            with open(log, encoding="utf-8", errors="replace") as f:
                tail = f.read().strip().splitlines()[-1:] or ["no output"]
            raise SandboxError(f"sandbox worker {index} did not start ({sys.executable}): {tail[0]}")
        self.isolation = ready["isolation"]
        fl = fcntl.fcntl(proc.in_fd, fcntl.F_GETFL)
        fcntl.fcntl(proc.in_fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self._sel.register(proc.out_fd, selectors.EVENT_READ, proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            self._stop(proc)
        self._procs.clear()
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self._scratch_root:
            shutil.rmtree(self._scratch_root, ignore_errors=True)
            self._scratch_root = None

    def _stop(self, proc: _Proc) -> None:
        try:
            self._sel.unregister(proc.out_fd)
        except (KeyError, ValueError, AttributeError):
            pass
        try:  # workers hold nothing worth a graceful stop; the group takes a running program's child with it
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
        """Run every program (each in its own child process); results in input order."""
        if not self._procs:
            raise SandboxError("the sandbox is not started: use `with Sandbox() as sb:`")
        results: list[ExecResult | None] = [None] * len(programs)
        self._solo.clear()
        todo: deque[int] = deque()
        for i, program in enumerate(programs):
            refused = self._refuse(program)
            if refused is None:
                todo.append(i)
            else:
                results[i] = refused
        bar = _progress(len(programs), progress)
        done = len(programs) - len(todo)
        if bar:
            bar.update(bar.task_ids[0], advance=done)
        try:
            while todo or any(p.pending for p in self._procs):
                for proc in self._procs:
                    while todo and len(proc.pending) < 2:  # two batches each: a worker never waits for the host
                        size = max(1, min(self.batch, len(todo) // (2 * len(self._procs))))
                        ids = [todo.popleft()]
                        while todo and len(ids) < size and not self._solo.intersection((ids[0], todo[0])):
                            ids.append(todo.popleft())
                        proc.pending.append(ids)
                        proc.outbox += _frame([[i, programs[i]] for i in ids])
                    self._flush(proc)
                for key, events in self._sel.select(timeout=1.0):
                    proc = key.data
                    if events & selectors.EVENT_WRITE:
                        self._flush(proc)
                    if events & selectors.EVENT_READ:
                        finished = self._receive(proc, results, todo)
                        if bar and finished:
                            bar.update(bar.task_ids[0], advance=finished)
        finally:
            if bar:
                bar.stop()
        return results  # type: ignore[return-value]

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

    def _flush(self, proc: _Proc) -> None:
        if proc.outbox:
            try:
                n = os.write(proc.in_fd, proc.outbox)
                del proc.outbox[:n]
            except BlockingIOError:
                pass
            except BrokenPipeError:
                proc.outbox.clear()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if proc.outbox else 0)
        self._sel.modify(proc.out_fd, events, proc)

    def _receive(self, proc: _Proc, results: list, todo: deque) -> int:
        chunk = os.read(proc.out_fd, 1 << 20)
        if not chunk:
            return self._replace_dead(proc, results, todo)
        proc.inbox += chunk
        finished = 0
        while len(proc.inbox) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(proc.inbox)
            if len(proc.inbox) < _HEADER.size + n:
                break
            answered = json.loads(proc.inbox[_HEADER.size : _HEADER.size + n])
            del proc.inbox[: _HEADER.size + n]
            ids = proc.pending.popleft()
            assert [i for i, _ in answered] == ids, "sandbox worker answered out of order"
            for i, res in answered:
                results[i] = ExecResult(**res)
            finished += len(ids)
        return finished

    def _replace_dead(self, proc: _Proc, results: list, todo: deque) -> int:
        """A worker died (a bug or the OOM killer, never a program's doing by design): the program it was running
        gets an error, the rest are re-queued, and a fresh worker takes its place."""
        index = self._procs.index(proc)
        self._stop(proc)
        lost = [i for ids in proc.pending for i in ids]
        if lost:  # which one killed it is unknown: each is retried alone, on a fresh worker
            if len(lost) == 1:
                results[lost[0]] = ExecResult("error", error_class="WorkerCrash", error_message="sandbox worker died")
            else:
                self._solo.update(lost)
                todo.extendleft(reversed(lost))
        self._procs[index] = self._spawn(index)
        return 1 if len(lost) == 1 else 0

    def _read_blocking(self, proc: _Proc, timeout: float):
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
                if len(buf) >= _HEADER.size + n:
                    return json.loads(buf[_HEADER.size : _HEADER.size + n])
        return None


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


def _frame(obj) -> bytes:
    data = json.dumps(obj, ensure_ascii=True).encode()
    return _HEADER.pack(len(data)) + data


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from mixdistill.progress import Progress

    bar = Progress(TextColumn("sandbox"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.add_task("run", total=total)
    bar.start()
    return bar
