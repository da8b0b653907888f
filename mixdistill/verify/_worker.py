"""A warm sandbox worker: `python -m mixdistill.verify._worker CONFIG_JSON`, driven by `Sandbox` over its stdin/stdout.

The worker isolates itself once (network namespace, private mounts, Landlock, seccomp; see `isolation`), then for
each program forks a child that becomes `nobody` (when the worker is root), adds per-program limits and a stricter
seccomp filter, runs the program and reports one JSON result on a pipe. The per-program cost is a fork, not an
interpreter start. The child is untrusted: the worker parses what it reports as bounded JSON and never lets it touch
the host's stdin/stdout.

Wire format both ways: 4-byte big-endian length + UTF-8 JSON.
"""

from __future__ import annotations

import builtins
import gc
import io
import json
import os
import re
import resource
import select
import signal
import struct
import sys
import time
from decimal import Decimal
from fractions import Fraction

_HEADER = struct.Struct(">I")
MAX_RESULT_BYTES = 1 << 18
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Modules a worker imports on demand (a program mentions them) so a child does not pay for them; never a name taken
# from the program itself. `random` (also imported by `statistics`) is not eager: it reseeds in every forked child,
# which costs more than the whole rest of a typical program.
LAZY_MODULES = ("sympy", "numpy", "statistics", "random")
EAGER_MODULES = (
    "math cmath fractions decimal itertools functools collections re datetime string operator heapq bisect json"
).split()
_LAZY_RE = re.compile(r"\b(" + "|".join(LAZY_MODULES) + r")\b")


# ------------------------------------------------------------------------------------------------ framing
def write_frame(fd: int, obj) -> None:
    data = json.dumps(obj, ensure_ascii=True).encode()
    _write_all(fd, _HEADER.pack(len(data)) + data)


def _write_all(fd: int, data: bytes, write=os.write) -> None:
    view = memoryview(data)
    while view:
        n = write(fd, view)
        if not isinstance(n, int) or n <= 0:
            raise OSError("short write")
        view = view[n:]


def read_frame(fd: int):
    """Blocking read of one frame; None at end of stream."""
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ------------------------------------------------------------------------------------------------ the child
class _BoundedText(io.TextIOBase):
    """stdout/stderr for a program: keeps the first `limit` characters, drops the rest (huge output costs nothing)."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size = limit, [], 0
        self.buffer = _BoundedBytes(self)

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        s = str(s)
        if self.size < self.limit:
            self.parts.append(s[: self.limit - self.size])
            self.size += len(self.parts[-1])
        return len(s)

    def head(self) -> str:
        return "".join(self.parts)


class _BoundedBytes(io.RawIOBase):
    def __init__(self, text: _BoundedText):
        self.text = text

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.text.write(bytes(b).decode("utf-8", "replace"))
        return len(b)


class Forbidden(PermissionError):
    """Raised by the audit hook; the attempt is also recorded, so catching it does not hide it."""


def _audit_guard(scratch: str, attempts: list):
    """The Python-level guard: a PEP 578 audit hook refusing process, network, ctypes and out-of-scratch file
    operations. It is a tripwire for classification, not the boundary: the OS-level layers hold without it."""
    blocked = frozenset(
        "os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty subprocess.Popen pty.spawn socket.__new__ "
        "socket.connect socket.bind socket.getaddrinfo socket.gethostbyname socket.sendto ctypes.dlopen ctypes.dlsym "
        "ctypes.cdata os.kill os.killpg signal.pthread_kill os.putenv os.unsetenv os.chown os.setxattr "
        "sys.remote_exec _posixsubprocess.fork_exec".split()
    )
    path_events = frozenset("os.remove os.rename os.rmdir os.truncate os.link os.symlink os.chmod os.mkdir os.utime "
                            "shutil.rmtree shutil.copyfile shutil.move".split())
    no_import = frozenset(("ctypes", "_ctypes", "cffi", "pyseccomp", "mixdistill"))
    prefix = scratch.rstrip("/") + "/"
    realpath, join, fspath = os.path.realpath, os.path.join, os.fspath

    def inside(path) -> bool:
        if isinstance(path, int):
            return True
        try:
            p = fspath(path)
            p = p.decode("utf-8", "replace") if isinstance(p, bytes) else p
            return (realpath(join(scratch, p)) + "/").startswith(prefix)
        except (TypeError, ValueError):
            return False

    def deny(event: str, detail: str = "") -> None:
        attempts.append(f"{event} {detail}".strip())
        raise Forbidden(f"sandbox: {event} is not allowed {detail}".strip())

    def hook(event: str, args) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS
            if writing and not inside(path):
                deny("open for writing", repr(path)[:200])
        elif event in blocked:
            deny(event)
        elif event in path_events:
            if not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
                deny(event, repr(args[0])[:200])
        elif event == "import" and args[0].partition(".")[0] in no_import:
            deny("import", args[0])

    return hook


_NUMERIC_TYPES = (bool, int, float)


def _describe_answer(value, float_=float, repr_=repr, type_=type, isinstance_=isinstance):
    """(text, number, kind) of an answer, using builtins captured before the program ran.

    Only exact types are converted, so a program cannot smuggle an object whose `__eq__` or `__float__` lies.
    """
    t = type_(value)
    if t in _NUMERIC_TYPES or t in (Fraction, Decimal):
        try:
            number = float_(value)
        except OverflowError:
            number = float_("inf") if value > 0 else float_("-inf")
        try:
            text = repr_(value) if t is not float else repr_(number)
        except ValueError:  # int too large to print
            text = f"<int with {value.bit_length()} bits>"
        return text, number, "bool" if t is bool else "number"
    if t is complex:
        return repr_(value), (value.real if value.imag == 0 else None), "number" if value.imag == 0 else "complex"
    mod = getattr(t, "__module__", "") or ""
    if mod.startswith("numpy") and t.__name__ != "ndarray" and "numpy" in sys.modules:
        import numpy

        if isinstance_(value, numpy.generic):
            return _describe_answer(value.item(), float_, repr_, type_, isinstance_)
    if mod.startswith("sympy") and "sympy" in sys.modules:
        import sympy

        if isinstance_(value, sympy.Basic):
            try:
                return str(value), float_(sympy.N(value)), "number"
            except (TypeError, ValueError):
                return str(value)[:1000], None, "expression"
    if t is str:
        return value[:1000], None, "str"
    try:
        text = object.__repr__(value) if not isinstance_(value, (list, tuple, dict, set)) else repr_(value)
    except Exception:
        text = f"<{t.__name__}>"
    return text[:1000], None, {list: "list", tuple: "tuple", dict: "dict", set: "set"}.get(t, "object")


def _classify_exception(exc: BaseException, attempts: list) -> str:
    if attempts or isinstance(exc, PermissionError):
        return "forbidden"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, RuntimeError) and "new thread" in str(exc):
        return "forbidden"
    return "error"


class ChildKit:
    """What a child needs that does not depend on the program, built in the worker before the fork: a child that
    builds it itself pays for copy-on-write page faults on every object it touches."""

    def __init__(self, cfg: dict, child_seccomp, confine):
        self.cfg, self.child_seccomp, self.confine = cfg, child_seccomp, confine
        self.out = _BoundedText(cfg["max_output"])
        self.attempts: list[str] = []
        self.hook = _audit_guard(cfg["scratch"], self.attempts)
        self.stdin = io.StringIO("")


def run_child(program: str, result_fd: int, kit: ChildKit) -> None:
    """Runs in the forked child; never returns. Writes exactly one JSON result to `result_fd` and `_exit`s.

    Builtins a program patches are not restored: the child ends with the program, the next one is a fresh fork, and
    a patched builtin can at worst break this harness (an `error` result), never the comparison, done in the host.
    """
    cfg = kit.cfg
    devnull = cfg["devnull_fd"]
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.chdir(cfg["scratch"])
    kit.confine()
    if kit.child_seccomp is not None:
        kit.child_seccomp.install()

    out, attempts = kit.out, kit.attempts
    dumps, monotonic, exit_, write = json.dumps, time.perf_counter, os._exit, os.write
    sys.stdout = sys.stderr = out
    sys.stdin = kit.stdin
    if cfg["python_guard"]:
        sys.addaudithook(kit.hook)

    res = {"status": "ok", "answer": None, "answer_number": None, "answer_kind": None,
           "error_class": None, "error_message": None}
    start = monotonic()
    g = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(program, "<program>", "exec"), g)
        if g.get("ans") is not None:
            value = g["ans"]
        elif callable(g.get("solution")):
            value = g["solution"]()
        else:
            value = None
    except BaseException as exc:  # noqa: BLE001 (SystemExit and KeyboardInterrupt from a program are results too)
        value = None
        res["status"] = _classify_exception(exc, attempts)
        res["error_class"] = type(exc).__name__
        try:
            res["error_message"] = str(exc)[:500]
        except BaseException:  # noqa: BLE001
            res["error_message"] = "<unprintable>"
    elapsed = monotonic() - start
    if attempts:
        res["status"] = "forbidden"
        res["error_class"] = res["error_class"] or "Forbidden"
        res["error_message"] = "; ".join(attempts)[:500]
    elif res["status"] == "ok":
        if value is None:
            res["status"] = "no-answer"
        else:
            try:
                res["answer"], res["answer_number"], res["answer_kind"] = _describe_answer(value)
            except BaseException as exc:  # noqa: BLE001
                res.update(status="error", error_class=type(exc).__name__, error_message="answer could not be read")
    res["stdout_head"] = out.head()
    res["runtime_s"] = elapsed
    try:
        _write_all(result_fd, dumps(res, ensure_ascii=True).encode(), write)
    finally:
        exit_(0)


# ------------------------------------------------------------------------------------------------ the worker
class Worker:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.report: dict[str, str] = {}
        self.child_seccomp = None

    def isolate(self) -> None:
        """Set up everything that is per worker (once). Each layer that the machine refuses is reported, not fatal."""
        from mixdistill.verify import isolation

        cfg, rep = self.cfg, self.report
        worker_filter = None
        if cfg.get("seccomp_worker") and cfg.get("seccomp_child"):
            worker_filter = isolation.SeccompProgram(bytes.fromhex(cfg["seccomp_worker"]))
            self.child_seccomp = isolation.SeccompProgram(bytes.fromhex(cfg["seccomp_child"]))
        else:
            rep["seccomp"] = f"unavailable: {cfg.get('seccomp_error', 'no filter')}"
        err = isolation.enter_network_namespace()
        rep["network namespace"] = err or "on"
        err = isolation.can_drop_to_nobody(cfg["scratch"])
        if err is None:
            staging = cfg["scratch"] + ".mounts"
            os.mkdir(staging, 0o700)
            paths = {sys.base_prefix, sys.prefix, *(p for p in sys.path if p)}
            hidden = isolation.expose_python_only(sorted(paths), staging)
            if hidden is not None:
                err = f"Python installation not readable by nobody and cannot be exposed ({hidden})"
        cfg["drop_uid"] = err is None
        rep["uid nobody"] = err or "on"
        err = isolation.no_new_privs()
        rep["no_new_privs"] = err or "on"
        abi, err = isolation.landlock_scratch_only(cfg["scratch"])
        rep["landlock"] = err or f"on (ABI {abi})"
        if worker_filter is not None:
            rep["seccomp"] = worker_filter.install() or "on"
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        rep["rlimits"] = "on"
        limits, drop = isolation.child_rlimits, isolation.become_nobody if cfg["drop_uid"] else None

        def confine() -> None:
            limits(cfg["cpu_s"], cfg["address_space"], cfg["file_bytes"])
            if drop is not None:
                drop()

        self.confine, self.address_space_in_use = confine, isolation.address_space_in_use
        # A program that wants ctypes must import it afresh, which the Python guard refuses; the worker keeps its
        # own references through the functions above.
        for name in ("ctypes", "_ctypes", "ctypes._endian", "mixdistill.verify.isolation"):
            sys.modules.pop(name, None)

    def preload(self, program: str) -> None:
        for name in set(_LAZY_RE.findall(program)):
            if name not in sys.modules:
                try:
                    __import__(name)
                except Exception:  # noqa: BLE001  (not installed: the child will report the ImportError)
                    pass
                self._set_address_space()
                gc.freeze()

    def _set_address_space(self) -> None:
        self.cfg["address_space"] = self.address_space_in_use() + self.cfg["memory_bytes"]

    def run(self, program: str) -> dict:
        self.preload(program)
        kit = ChildKit(self.cfg, self.child_seccomp, self.confine)
        r, w = os.pipe()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(self.cfg["in_fd"])
            os.close(self.cfg["out_fd"])
            try:
                run_child(program, w, kit)
            finally:
                os._exit(70)
        os.close(w)
        try:
            data, status = self._collect(pid, r, t0 + self.cfg["timeout_s"])
        finally:
            os.close(r)
        wall = time.perf_counter() - t0
        self._clean_scratch()
        return _interpret(data, status, wall, self.cfg)

    def _collect(self, pid: int, r: int, deadline: float) -> tuple[bytes, int | None]:
        """Read the child's result until it exits or the wall deadline passes (then SIGKILL). Returns (bytes, wait
        status or None when killed for time)."""
        data = bytearray()
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(r, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        reading = True
        try:
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return bytes(data), None
                events = dict(poller.poll(left * 1000))
                if reading and r in events:
                    chunk = os.read(r, 65536)
                    if not chunk:
                        poller.unregister(r)
                        reading = False
                    elif len(data) < MAX_RESULT_BYTES:
                        data += chunk
                if pidfd in events:
                    while reading:  # drain what the child wrote before exiting
                        chunk = os.read(r, 65536)
                        if not chunk:
                            break
                        if len(data) < MAX_RESULT_BYTES:
                            data += chunk
                    return bytes(data), os.waitpid(pid, 0)[1]
        finally:
            os.close(pidfd)

    def _clean_scratch(self) -> None:
        scratch = self.cfg["scratch"]
        with os.scandir(scratch) as it:
            entries = list(it)
        if entries:
            import shutil

            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    try:
                        os.unlink(e.path)
                    except OSError:
                        pass

    def serve(self) -> None:
        in_fd, out_fd = self.cfg["in_fd"], self.cfg["out_fd"]
        write_frame(out_fd, {"ready": True, "isolation": self.report, "pid": os.getpid()})
        while (batch := read_frame(in_fd)) is not None:  # a list of [id, program]; answered as one frame
            write_frame(out_fd, [[i, self.run(program)] for i, program in batch])


def _interpret(data: bytes, status: int | None, wall: float, cfg: dict) -> dict:
    """Turn what a child left behind into a result dict; never trusts its shape."""
    base = {"status": "error", "answer": None, "answer_number": None, "answer_kind": None, "stdout_head": "",
            "error_class": None, "error_message": None, "runtime_s": wall}
    if status is None:
        return {**base, "status": "timeout", "error_class": "Timeout",
                "error_message": f"wall time limit {cfg['timeout_s']}s exceeded"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGPROF, signal.SIGXCPU, signal.SIGKILL):
            return {**base, "status": "timeout", "error_class": "Timeout",
                    "error_message": f"CPU time limit {cfg['cpu_s']}s exceeded"}
        if sig == signal.SIGSYS:
            return {**base, "status": "forbidden", "error_class": "Forbidden", "error_message": "blocked system call"}
        return {**base, "error_class": "Crash", "error_message": f"killed by {signal.Signals(sig).name}"}
    try:
        res = json.loads(data.decode("utf-8")) if data else None
    except (UnicodeDecodeError, ValueError):
        res = None
    if not isinstance(res, dict) or res.get("status") not in {"ok", "error", "memory", "forbidden", "no-answer"}:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        return {**base, "error_class": "EarlyExit", "error_message": f"program exited (code {code}) without a result"}
    out = {**base}
    for key in ("status", "answer", "answer_kind", "stdout_head", "error_class", "error_message"):
        value = res.get(key)
        out[key] = value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else None
    out["stdout_head"] = out["stdout_head"] or ""
    number = res.get("answer_number")
    out["answer_number"] = float(number) if isinstance(number, (int, float)) and not isinstance(number, bool) else None
    runtime = res.get("runtime_s")
    out["runtime_s"] = float(runtime) if isinstance(runtime, (int, float)) and 0 <= runtime <= wall else wall
    return out


_WARMUP = """
import math
def solution():
    total = 0
    for i in range(3):
        total += i * 1.5 / 2 - 1
    return round(total, 2)
x = [1, 2, 3]
ans = f"{solution()} {sum(x) // 2 % 5 ** 2}" if x else None
"""


def main() -> None:
    cfg = json.loads(sys.argv[1])
    # keep the protocol pipes off fds 0/1 so nothing (a library's print, a child) can write into the stream
    cfg["in_fd"], cfg["out_fd"] = os.dup(0), os.dup(1)
    cfg["devnull_fd"] = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(cfg["devnull_fd"], fd)
    for name in EAGER_MODULES:
        __import__(name)
    worker = Worker(cfg)
    worker.isolate()
    # The first compile in a process initialises the parser; done here once, not in every forked child.
    exec(compile(_WARMUP, "<warmup>", "exec"), {})
    worker._set_address_space()
    gc.freeze()  # forked children then do not touch (copy) the worker's objects when the collector runs
    worker.serve()


if __name__ == "__main__":
    main()
