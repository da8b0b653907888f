"""A sandbox slot: `python -I -c <bootstrap> CONFIG_JSON`, driven by `Sandbox` over its stdin/stdout.

Process shape (see `isolation` for each OS layer and `Sandbox.isolation` for what this machine allowed):

    host --pipes--> slot process W: enters private network, IPC and mount namespaces, mounts a small tmpfs as
                    scratch, unshares a PID namespace and forks
                      zygote Z (PID 1 of that namespace): private /proc, Landlock, seccomp; then, per program,
                        forks child C *before* the program exists anywhere in Z: C reads its program straight from
                        the host's pipe, drops to the slot's own uid, adds per-program limits and a stricter seccomp
                        filter, forgets the zygote's objects, runs the program and writes one JSON result.

Z never parses, keeps or even sees a program or a result: it forwards the child's result bytes (from one reused,
zeroed buffer) with its own measurements to the host, which reads them as untrusted input (`results`). So no child
inherits another program's source or output, live or freed, and nothing a child writes can crash Z.

Cost model: a typical PoT program runs in ~40 us, but every page a child (or Z, after a fork) writes is a
copy-on-write fault, ~4-5 us each on this project's VM, and a child used to take ~350 of them. So whatever can be done
once is done once in Z (cwd, fds 0-2 and Python's stdio, the audit hook, one result pipe per slot), Z's loop keeps
few objects alive, and the child writes its result without `json.dumps`. `mixdistill bench sandbox` measures it.

Host -> slot: per program a `REQUEST` header (id, modules to preload, source length) then the UTF-8 source.
Slot -> host: one ready frame (4-byte length + JSON), then per program a `REPLY` header + the child's result bytes.
"""

from __future__ import annotations

import atexit
import builtins
import fcntl
import gc
import io
import json
import os
import re
import resource
import signal
import struct
import sys
import time
from decimal import Decimal
from fractions import Fraction

_HEADER = struct.Struct(">I")
REQUEST = struct.Struct(">IBI")  # program id, preload mask (bits of LAZY_MODULES), source length in bytes
REPLY = struct.Struct(">IBiQI")  # program id, outcome, wait status, wall ns, result length
EXITED, WALL_TIMEOUT = 0, 1
READ_MARK = b"R"  # the child's first byte: it has read its whole program (the stream is in step)
MAX_RESULT_BYTES = 1 << 18
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Modules a zygote imports on demand (the host sees a program mention them) so a child does not pay for them.
# `random` (also imported by `statistics`) is not eager: it reseeds in every forked child, which costs more than the
# whole rest of a typical program.
LAZY_MODULES = ("sympy", "numpy", "statistics", "random")
EAGER_MODULES = (
    "math cmath fractions decimal itertools functools collections re datetime string operator heapq bisect json"
).split()
LAZY_RE = re.compile(r"\b(" + "|".join(LAZY_MODULES) + r")\b")

# Everything the zygote holds that a child must not keep: the child takes what it needs, then clears it.
_STATE: dict = {}
# The zygote's result buffers: zeroed after each program, so a child may keep them (freeing them costs more).
_BUFFERS: dict = {}
RESULT_PIPE_BYTES = 1 << 20


def preload_mask(program: str) -> int:
    """Bits of the lazy modules a program mentions (computed by the host, so Z never sees the program)."""
    names = set(LAZY_RE.findall(program))
    return sum(1 << i for i, name in enumerate(LAZY_MODULES) if name in names)


# ------------------------------------------------------------------------------------------------ framing
def write_frame(fd: int, obj) -> None:
    data = json.dumps(obj, ensure_ascii=True).encode()
    _write_all(fd, _HEADER.pack(len(data)) + data)


def _write_all(fd: int, data, write=os.write) -> None:
    view = memoryview(data)
    while view:
        n = write(fd, view)
        if not isinstance(n, int) or n <= 0:
            raise OSError("short write")
        view = view[n:]


def _read_rest(fd: int, head: bytes, n: int) -> bytes | None:
    """`head` and what follows it on `fd`, up to `n` bytes in all (None if the stream ends first)."""
    buf = bytearray(head)
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
        self.limit, self.parts, self.size, self.tail = limit, [], 0, ""
        self.buffer = _BoundedBytes(self)

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        s = str(s)
        if self.size < self.limit:
            self.parts.append(s[: self.limit - self.size])
            self.size += len(self.parts[-1])
        self.tail = (self.tail + s[-400:])[-400:]
        return len(s)

    def reset(self) -> None:
        """Made once in the zygote (a new io object per child cost ~20 page faults); each child starts it empty."""
        self.parts, self.size, self.tail = [], 0, ""

    def head(self) -> str:
        return "".join(self.parts)

    def last_line(self) -> str | None:
        """The last non-empty line printed (for the opt-in `printed` answer convention), at most 200 characters."""
        lines = [ln.strip() for ln in self.tail.splitlines() if ln.strip()]
        return lines[-1][:200] if lines else None


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


_BLOCKED_EVENTS = frozenset(
    "os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty subprocess.Popen pty.spawn socket.__new__ "
    "socket.connect socket.bind socket.getaddrinfo socket.gethostbyname socket.sendto ctypes.dlopen ctypes.dlsym "
    "ctypes.cdata os.kill os.killpg signal.pthread_kill os.putenv os.unsetenv os.chown os.setxattr "
    "sys.remote_exec _posixsubprocess.fork_exec gc.get_objects gc.get_referrers gc.get_referents".split()
)
_PATH_EVENTS = frozenset("os.remove os.rename os.rmdir os.truncate os.link os.symlink os.chmod os.mkdir os.utime "
                         "shutil.rmtree shutil.copyfile shutil.move".split())
_NO_IMPORT = frozenset(("ctypes", "_ctypes", "cffi", "pyseccomp", "mixdistill"))


def _audit_guard(scratch: str, attempts: list):
    """The Python-level guard: a PEP 578 audit hook refusing process, network, ctypes and out-of-scratch file
    operations. It is a tripwire for classification, not the boundary: the OS-level layers hold without it.

    The zygote installs it once, disarmed (its own fork and cleaning pass through); each child arms it just before
    its program runs with the returned `arm`, which is not reachable from the program (building the hook in every
    child cost ~30 copy-on-write page faults, ~5% of a program's cost)."""
    blocked, path_events, no_import = _BLOCKED_EVENTS, _PATH_EVENTS, _NO_IMPORT
    prefix = scratch.rstrip("/") + "/"
    realpath, join, fspath = os.path.realpath, os.path.join, os.fspath
    armed = [False]

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
        if not armed[0]:
            return
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

    def arm() -> None:
        armed[0] = True

    return hook, arm


def _exact_numbers() -> dict:
    """Exact classes whose value the child may state as a number, with the slot readers captured before any program
    runs: a program can patch `Fraction.__float__` or a sympy method, not a C slot read through a captured
    descriptor. Subclasses and look-alikes (an object claiming to come from `sympy`) are never numbers."""
    table = {int: "int", float: "float", Fraction: "fraction", Decimal: "decimal", bool: "bool", complex: "complex"}
    np = sys.modules.get("numpy")
    if np is not None:
        for t in (np.float16, np.float32, np.float64):
            table[t] = "np-float"
        for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
            table[t] = "np-int"
        table[np.bool_] = "bool"
    sp = sys.modules.get("sympy")
    if sp is not None:
        numbers = sp.core.numbers
        for t in (numbers.Integer, numbers.Zero, numbers.One, numbers.NegativeOne):
            table[t] = "sp-int"
        for t in (numbers.Rational, numbers.Half):
            table[t] = "sp-rational"
        table[numbers.Float] = "sp-float"
        table["sp-p"], table["sp-q"] = numbers.Rational.__dict__["p"], numbers.Rational.__dict__["q"]
    return table


_FRACTION_NUM, _FRACTION_DEN = Fraction.__dict__["_numerator"], Fraction.__dict__["_denominator"]
_MAX_INT_BITS = 14_000  # about 4,200 digits: a longer int is reported by size only (Python refuses to print it)


def _int_text(value: int, int_repr=int.__repr__) -> str:
    if value.bit_length() > _MAX_INT_BITS:
        return f"{'-' if value < 0 else ''}<int with {value.bit_length()} bits>"
    return int_repr(value)


def describe_answer(value, exact: dict, type_=type, float_repr=float.__repr__):
    """(text, kind) of an answer. The host derives the number from the text (`results.number_of`), so the number
    judged is always the text stored; only exact classes get a numeric kind."""
    kind = exact.get(type_(value))
    if kind in ("int", "float", "fraction", "decimal", "bool", "complex"):
        if kind == "int":
            return _int_text(value), "int"
        if kind == "float":
            return float_repr(value), "float"
        if kind == "fraction":
            return f"{_int_text(_FRACTION_NUM.__get__(value))}/{_int_text(_FRACTION_DEN.__get__(value))}", "fraction"
        if kind == "decimal":
            return Decimal.__str__(value), "decimal"
        if kind == "bool":
            return ("True" if value else "False"), "bool"
        return complex.__repr__(value), "complex"
    if kind == "np-float":
        return float_repr(float(value)), "float"
    if kind == "np-int":
        return _int_text(int(value)), "int"
    if kind == "sp-float":
        return float_repr(float(value)), "float"
    if kind in ("sp-int", "sp-rational"):
        p = int(exact["sp-p"].__get__(value))
        q = int(exact["sp-q"].__get__(value)) if kind == "sp-rational" else 1
        return (_int_text(p), "int") if q == 1 else (f"{_int_text(p)}/{_int_text(q)}", "fraction")
    t = type_(value)
    if t is str:
        return str.__str__(value)[:1000], "str"
    sp = sys.modules.get("sympy")
    if sp is not None and isinstance(value, sp.Basic) and type_(value).__module__.startswith("sympy."):
        try:
            return str(value)[:1000], "expression"
        except Exception:  # noqa: BLE001
            return "<sympy expression>", "expression"
    try:
        text = repr(value) if t in (list, tuple, dict, set) else object.__repr__(value)
    except Exception:  # noqa: BLE001
        text = f"<{t.__name__}>"
    return text[:1000], {list: "list", tuple: "tuple", dict: "dict", set: "set"}.get(t, "object")


def _encode_result(res: dict, text=json.encoder.encode_basestring_ascii, float_repr=float.__repr__) -> bytes:
    """The flat result object as ASCII JSON. Written by hand because `json.dumps` builds a new C encoder per call,
    ~15 copy-on-write page faults in a fresh child; the host parses it with `json` (`results`)."""
    parts = []
    for key, value in res.items():
        kind = type(value)
        if value is None:
            parts.append(f'"{key}": null')
        elif kind is float:
            parts.append(f'"{key}": {float_repr(value)}')
        else:
            parts.append(f'"{key}": {text(value if kind is str else str(value))}')
    return ("{" + ", ".join(parts) + "}").encode()


def _classify_exception(exc: BaseException, attempts: list) -> str:
    if attempts or isinstance(exc, PermissionError):
        return "forbidden"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, RuntimeError) and "new thread" in str(exc):
        return "forbidden"
    return "error"


def _child(length: int, result_fd: int) -> None:
    """The forked child; never returns. Reads its program from the host's pipe, confines itself, forgets every object
    of the zygote (so the program's frame has no parent holding a fd, the seccomp kit or ctypes), runs the program
    and writes one JSON result after `READ_MARK`.

    Every page a child writes is a copy of the zygote's (~5 us each on a VM, the larger part of a program's cost), so
    what can be done once is done in the zygote: cwd, fds 0-2, stdout, the audit hook."""
    global _STATE
    st = _STATE
    in_fd = st["in_fd"]
    for fd in (st["out_fd"], st["result_r"], st["log_fd"]):
        os.close(fd)
    source = os.read(in_fd, length)
    while len(source) < length:
        more = os.read(in_fd, length - len(source))
        if not more:
            os._exit(71)
        source += more
    os.close(in_fd)
    os.write(result_fd, READ_MARK)
    st["confine"]()
    exact, out, attempts, arm = st["exact"], st["out"], st["attempts"], st["arm"]
    # Unreachable from here on. The dict itself stays alive (see `_setup`): clearing it instead would write to the
    # page of every object it holds (a copy-on-write fault each).
    _STATE = {}
    del st
    _run_program(source.decode("utf-8", "replace"), result_fd, arm, exact, out, attempts)


def _run_program(program: str, result_fd: int, arm, exact: dict, out: "_BoundedText", attempts: list) -> None:
    """Builtins a program patches are not restored: the child ends with the program and the next one is a fresh
    fork. Whatever the program does to this harness, it can at most change its own result, which the host reads
    as untrusted bytes."""
    encode, monotonic, exit_, write = _encode_result, time.perf_counter, os._exit, os.write
    out.reset()
    res = {"status": "ok", "answer": None, "answer_kind": None, "error_class": None, "error_message": None}
    g = {"__name__": "__main__", "__builtins__": builtins}
    if arm is not None:
        arm()
    del arm
    start = monotonic()
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
                res["answer"], res["answer_kind"] = describe_answer(value, exact)
                if type(value) is tuple and value:  # for the opt-in `first-of-tuple` convention
                    res["first_answer"], res["first_kind"] = describe_answer(value[0], exact)
            except BaseException as exc:  # noqa: BLE001
                res.update(status="error", error_class=type(exc).__name__, error_message="answer could not be read")
    res["stdout_head"] = out.head()
    res["printed"] = out.last_line()
    res["runtime_s"] = elapsed
    try:
        _write_all(result_fd, encode(res), write)
    finally:
        exit_(0)


# ------------------------------------------------------------------------------------------------ the zygote
def _zygote() -> tuple[int, int] | None:
    """PID 1 of the slot's namespace: one program at a time, answered in order. Returns None when the host closes
    the pipe or the stream can no longer be trusted to be in step (the host then replaces this slot); in a forked
    child it returns that child's job (source length, result fd), so the program's frame has no zygote frame above it.

    Every page the zygote writes after a fork is a copy-on-write fault, so the per-program loop is kept small: one
    result pipe for the slot's lifetime (drained after each child, whose end dies with it), the child's exit waited
    for with `sigtimedwait` on a blocked SIGCHLD, and the scratch directory scanned only when its `stat` says a
    program left something."""
    st = _STATE
    in_fd, out_fd, r, w = st["in_fd"], st["out_fd"], st["result_r"], st["result_w"]
    write_frame(out_fd, {"ready": True, "isolation": st["report"]})
    cfg = st["cfg"]
    timeout_ns, scratch = int(cfg["timeout_s"] * 1e9), cfg["scratch"]
    clean, times = st["clean_scratch"], st["scratch_times"]
    view, zeros = _BUFFERS["view"], _BUFFERS["zeros"]
    fork, now, unpack, pack, writev, stat = os.fork, time.perf_counter_ns, REQUEST.unpack, REPLY.pack, os.writev, os.stat
    mark = READ_MARK[0]
    size, read = REQUEST.size, os.read
    while True:
        head = read(in_fd, size)
        if len(head) < size:
            if not head or (head := _read_rest(in_fd, head, size)) is None:
                return None
        program_id, mask, length = unpack(head)
        if mask:
            _preload(mask)
        t0 = now()
        pid = fork()
        if pid == 0:
            return length, w
        outcome, status = _wait(pid, t0 + timeout_ns)
        n = _drain(r, view)
        writev(out_fd, [pack(program_id, outcome, status, now() - t0, n), view[:n]])
        in_step = n > 0 and view[0] == mark
        view[:n] = zeros[:n]  # no later child inherits this result, not even as freed memory
        if not in_step:  # it died before it had read all of its program: the stream is out of step
            return None
        if clean is None or _scratch_key(stat(scratch)) != clean:
            try:
                _reset_scratch(scratch, times)
            except (OSError, RecursionError):
                return None
        if st["check_sysv"] and _sysv_objects_left():
            return None


def _preload(mask: int) -> None:
    st = _STATE
    for i, name in enumerate(LAZY_MODULES):
        if mask & (1 << i) and name not in sys.modules:
            try:
                __import__(name)
            except Exception:  # noqa: BLE001  (not installed: the child will report the ImportError)
                pass
            st["cfg"]["address_space"] = st["address_space_in_use"]() + st["cfg"]["memory_bytes"]
            st["exact"] = _exact_numbers()
            gc.freeze()


def _wait(pid: int, deadline_ns: int, chld={signal.SIGCHLD}) -> tuple[int, int]:
    """(outcome, wait status) of the child: SIGCHLD (blocked in the zygote) is waited for until the wall deadline,
    then the child is SIGKILLed."""
    while True:
        left = deadline_ns - time.perf_counter_ns()
        info = signal.sigtimedwait(chld, left / 1e9) if left > 0 else None
        if info is None:
            os.kill(pid, signal.SIGKILL)
            return WALL_TIMEOUT, os.waitpid(pid, 0)[1]
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return EXITED, status


def _drain(r: int, view: memoryview) -> int:
    """Read what the child wrote (it is gone, so all of it is in the pipe): the first `MAX_RESULT_BYTES` are kept."""
    n = 0
    try:
        while n < MAX_RESULT_BYTES:
            got = os.readv(r, [view[n:]])
            if not got:
                return n
            n += got
    except BlockingIOError:
        return n
    spill = _BUFFERS["spill"]  # a result too long to keep: the rest is read and dropped
    try:
        while os.readv(r, [spill]):
            pass
    except BlockingIOError:
        pass
    spill[:] = _BUFFERS["zeros"][: len(spill)]
    return n


def _scratch_key(s: os.stat_result) -> tuple:
    return s.st_mode, s.st_nlink, s.st_size, s.st_uid, s.st_gid, s.st_atime_ns, s.st_mtime_ns


def _scratch_state(scratch: str, tmpfs: bool) -> tuple[tuple | None, tuple[int, int]]:
    """(key, times) of the empty, reset scratch directory. On tmpfs a directory's size counts its entries, so an
    equal key (mode, links, size, owner, times) means nothing to clean; elsewhere the key is None and the zygote
    always cleans. The times are restored by every clean."""
    s = os.stat(scratch)
    times = (s.st_atime_ns, s.st_mtime_ns)
    return (_scratch_key(s) if tmpfs and s.st_nlink == 2 and 0 < s.st_size < 100 else None), times


def _reset_scratch(scratch: str, times: tuple[int, int] | None = None) -> None:
    """Empty the scratch directory and reset its permissions and (given the clean ones) its timestamps, whatever the
    program left: trees of any depth (entries are hoisted to the top, so neither recursion nor path length grows),
    directories it made unreadable, an `os.utime` meant as a message to the next program."""
    if os.stat(scratch).st_mode & 0o7777 != 0o700:
        os.chmod(scratch, 0o700)
    root = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    try:
        empty_directory(root)
    finally:
        os.close(root)
    if times is not None:
        os.utime(scratch, ns=times)


def empty_directory(root: int) -> None:
    """Remove everything inside the directory open as `root` (a fd), iteratively; also used by the host."""
    hoisted = 0
    while True:
        with os.scandir(root) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        if not entries:
            return
        for name, is_dir in entries:
            if not is_dir:
                os.unlink(name, dir_fd=root)
                continue
            try:
                os.rmdir(name, dir_fd=root)
                continue
            except OSError:
                pass
            os.chmod(name, 0o700, dir_fd=root)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
            try:
                with os.scandir(fd) as it:
                    inner = [e.name for e in it]
                for sub in inner:
                    hoisted += 1
                    os.rename(sub, f".hoisted-{hoisted}", src_dir_fd=fd, dst_dir_fd=root)
            finally:
                os.close(fd)


def _sysv_objects_left() -> bool:
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}", "rb") as f:
                if len(f.read().splitlines()) > 1:
                    return True
        except OSError:
            pass
    return False


# ------------------------------------------------------------------------------------------------ the slot
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


def _setup(cfg: dict) -> None:
    """Everything per slot, once. Each layer that the machine refuses is reported, not fatal. Fills `_STATE`; in
    the slot process W, returns after forking the zygote (W then waits for it and exits)."""
    from mixdistill.verify import isolation

    st, rep = _STATE, {}
    if cfg["cpu"] is not None:  # the slot's core (`sandbox._slot_cpu`): a speed setting, so a refusal is not fatal
        try:
            os.sched_setaffinity(0, {cfg["cpu"]})
        except OSError:
            pass
    # keep the protocol pipes off fds 0/1 so nothing (a library's print, a child) can write into the stream
    st["in_fd"], st["out_fd"] = os.dup(0), os.dup(1)
    st["devnull_fd"] = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(st["devnull_fd"], fd)
    for name in EAGER_MODULES:
        __import__(name)
    worker_filter = child_filter = None
    if cfg.get("seccomp_worker") and cfg.get("seccomp_child"):
        worker_filter = isolation.SeccompProgram(bytes.fromhex(cfg["seccomp_worker"]))
        child_filter = isolation.SeccompProgram(bytes.fromhex(cfg["seccomp_child"]))
    else:
        rep["seccomp"] = f"off: {cfg.get('seccomp_error', 'no filter')}"
    scratch = cfg["scratch"]
    root = os.getuid() == 0
    rep["network namespace"] = isolation.enter_network_namespace() or "on"
    ipc = isolation.unshare(isolation.CLONE_NEWIPC, "IPC")
    rep["IPC namespace"] = ipc or "on (per slot; SysV IPC also refused by seccomp)"
    mounts = isolation.private_mounts()
    if mounts is None:
        err = isolation.mount_scratch(scratch, cfg["scratch_bytes"], cfg["uid"] if root else os.getuid())
        rep["scratch quota"] = err or f"on (tmpfs, {cfg['scratch_bytes'] >> 20} MB, {isolation.SCRATCH_INODES} inodes)"
    else:
        rep["scratch quota"] = f"off: {mounts}"
    if root:
        os.chown(scratch, cfg["uid"], cfg["uid"])
        os.chmod(scratch, 0o700)
    paths = sorted({sys.base_prefix, sys.prefix, *(p for p in sys.path if p)})
    hide_err = f"off: {mounts}" if mounts is not None else isolation.hide_private_dirs(paths, scratch + ".mounts", cfg["home"])
    rep["private directories hidden"] = hide_err or "on (home directories; the Python installation bound back)"
    drop = root and (hide_err is None or not isolation.python_blocked(paths))
    rep["uid per slot"] = f"on (uid {cfg['uid']})" if drop else (
        "off: not root (children keep the invoking user's uid)" if not root
        else "off: the Python installation is not readable by other users and could not be exposed")
    cfg["drop_uid"] = drop
    pid_err = isolation.unshare(isolation.CLONE_NEWPID, "PID")
    zygote = os.fork() if pid_err is None else 0
    if zygote:  # the slot process W: holds nothing a program could reach; lives as long as the zygote
        for fd in (st["in_fd"], st["out_fd"], st["devnull_fd"], 0, 1):
            os.close(fd)
        status = os.waitpid(zygote, 0)[1]
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    isolation.die_with_parent()
    rep["PID namespace"] = pid_err or "on (per slot)"
    if pid_err is None and mounts is None:
        rep["private /proc"] = isolation.mount_proc() or "on"
    else:
        rep["private /proc"] = f"off: {pid_err or mounts}"
    rep["no_new_privs"] = isolation.no_new_privs() or "on"
    abi, err = isolation.landlock_scratch_only(scratch)
    rep["landlock"] = err or f"on (ABI {abi})"
    if worker_filter is not None:
        rep["seccomp"] = worker_filter.install() or "on"
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    rep["rlimits"] = "on"
    limits, become = isolation.child_rlimits, isolation.become_uid
    uid = cfg["uid"] if drop else None

    def confine() -> None:
        limits(cfg["cpu_s"], cfg["address_space"], cfg["file_bytes"])
        if uid is not None:
            become(uid)
        if child_filter is not None:
            child_filter.install()

    r, w = os.pipe()  # the slot's one result pipe: each child writes its result, the zygote drains it after the exit
    try:  # room for a whole result: the child never waits for the zygote to read
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, RESULT_PIPE_BYTES)
    except OSError:
        pass
    os.set_blocking(r, False)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # waited for with sigtimedwait
    attempts: list[str] = []
    hook, arm = _audit_guard(scratch, attempts) if cfg["python_guard"] else (None, None)
    st.update(cfg=cfg, report=rep, confine=confine, exact=_exact_numbers(), result_r=r, result_w=w,
              address_space_in_use=isolation.address_space_in_use, check_sysv=child_filter is None and ipc is None,
              out=_BoundedText(cfg["max_output"]), attempts=attempts, arm=arm)
    _BUFFERS.update(view=memoryview(bytearray(MAX_RESULT_BYTES)), spill=memoryview(bytearray(1 << 16)),
                    zeros=memoryview(bytes(MAX_RESULT_BYTES)))
    # A program that wants ctypes must import it afresh, which the Python guard refuses. The isolation module (and
    # through it ctypes and the libc handle) is reachable only from `_STATE`, which each child replaces by an empty
    # dict, and from an `atexit` argument (held by the interpreter, with no Python way back to it), so the child
    # frees nothing: freeing the kit in every child cost tens of page faults.
    for name in ("ctypes", "_ctypes", "ctypes._endian", "mixdistill.verify.isolation"):
        sys.modules.pop(name, None)
    package = sys.modules.get("mixdistill.verify")
    if package is not None and hasattr(package, "isolation"):
        delattr(package, "isolation")
    atexit.register(id, st)
    # The first compile in a process initialises the parser; done here once, not in every forked child.
    exec(compile(_WARMUP, "<warmup>", "exec"), {})
    cfg["address_space"] = isolation.address_space_in_use() + cfg["memory_bytes"]
    # Done once for every child: the cwd, fds 0-2 on /dev/null, Python's stdio, the (disarmed) audit hook.
    os.chdir(scratch)
    _reset_scratch(scratch)
    st["clean_scratch"], st["scratch_times"] = _scratch_state(scratch, rep["scratch quota"].startswith("on"))
    st["log_fd"] = os.dup(2)  # the slot's log, for the zygote's own failures (`main`); children close it
    for fd in (0, 1, 2):
        os.dup2(st["devnull_fd"], fd)
    os.close(st.pop("devnull_fd"))
    sys.stdout = sys.stderr = st["out"]
    sys.stdin = io.StringIO("")
    if hook is not None:
        sys.addaudithook(hook)
    gc.freeze()  # forked children then do not touch (copy) the zygote's objects when the collector runs


def main() -> None:
    _setup(json.loads(sys.argv[1]))
    try:
        job = _zygote()
    except BaseException:
        import traceback

        os.write(_STATE["log_fd"], traceback.format_exc().encode("utf-8", "replace"))
        raise
    if job is not None:  # a forked child
        try:
            _child(*job)
        finally:
            os._exit(70)
