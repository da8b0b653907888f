"""OS-level isolation for sandbox workers: namespaces, uid drop, Landlock, seccomp, rlimits.

Each function tries one kernel mechanism and reports whether it took effect, so the sandbox degrades to what the
machine allows and says so (`Sandbox.isolation`), instead of failing on a kernel without Landlock or a container
without user namespaces. Everything here runs in the trusted worker (once) or in the forked child (per program),
never in the host process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SLOT_UID_BASE = 3_500_000  # slot i's children run as uid/gid SLOT_UID_BASE + i: no sibling shares a uid
SCRATCH_INODES = 1024  # files and directories a program may have in its scratch tmpfs at once

# Syscalls no worker needs: process replacement, networking, tracing other processes, kernel and mount control; and
# (so that each child's own filter stays short: attaching a filter costs in proportion to its length, per program)
# the rest of what no program may do, inherited by every child: signals queued to other processes, pidfds, new
# sessions or process groups, SysV or POSIX message-queue IPC (math programs never need it; objects would outlive the
# program), extended attributes (one set on the scratch directory would reach the next program).
WORKER_DENY = (
    "execve execveat socket socketpair connect bind listen accept accept4 ptrace process_vm_readv process_vm_writev "
    "mount umount2 pivot_root chroot unshare setns bpf perf_event_open keyctl add_key request_key init_module "
    "finit_module delete_module kexec_load kexec_file_load reboot swapon swapoff iopl ioperm io_uring_setup "
    "io_uring_enter io_uring_register userfaultfd personality acct settimeofday clock_settime sethostname "
    "setdomainname open_by_handle_at name_to_handle_at fanotify_init quotactl syslog vhangup "
    "rt_sigqueueinfo rt_tgsigqueueinfo pidfd_open pidfd_send_signal pidfd_getfd setpgid setsid "
    "shmget shmat shmctl shmdt msgget msgsnd msgrcv msgctl semget semop semtimedop semctl mq_open mq_unlink "
    "mq_timedsend mq_timedreceive mq_notify mq_getsetattr "
    "setxattr lsetxattr fsetxattr removexattr lremovexattr fremovexattr setxattrat removexattrat"
).split()
# Added per program, what the zygote itself needs: no new processes or threads (fork bombs, threads outliving the
# program), no signals to others (the zygote kills a child past its wall time), no resource limits changed (the
# child sets its own first), no prctl (the child installs this filter with it).
CHILD_DENY = "fork vfork clone clone3 kill tkill tgkill prctl prlimit64".split()


def _errno_fail(what: str) -> str:
    return f"{what}: {os.strerror(ctypes.get_errno())}"


def enter_network_namespace() -> str | None:
    """A private network namespace (no interfaces but a down loopback): the OS-level 'no network'.

    Root can unshare the network directly; an unprivileged user first enters a user namespace that maps only its
    own uid, so nothing is gained. Returns None on success, else why it was not possible.
    """
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return None if _libc.unshare(CLONE_NEWNET) == 0 else _errno_fail("unshare(CLONE_NEWNET)")
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return _errno_fail("unshare(CLONE_NEWUSER|CLONE_NEWNET)")
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    except OSError as e:
        return f"user namespace maps: {e.strerror}"
    return None


def unshare(flag: int, name: str) -> str | None:
    """A private namespace of one kind (IPC: SysV objects and POSIX queues; PID: applies to the next fork)."""
    return None if _libc.unshare(flag) == 0 else _errno_fail(f"unshare({name})")


def become_uid(uid: int) -> None:
    """Children of a root slot run as the slot's own uid: root-owned files turn read-only or unreadable, other
    processes' /proc entries become unreadable, RLIMIT_NPROC is enforced, and no sibling slot shares the uid."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18


def _blocked_ancestor(path: str) -> str | None:
    """The top-most directory on the way to `path` that `nobody` cannot enter (no o+x), if any."""
    parts = os.path.abspath(path).split(os.sep)[1:]
    current = ""
    for part in parts:
        current = f"{current}/{part}"
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda v: None if v is None else v.encode()  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")


def private_mounts() -> str | None:
    """A mount namespace of the slot's own, nothing propagating back to the host."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        return _errno_fail("unshare(CLONE_NEWNS)")
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as e:
        return str(e)
    return None


def mount_scratch(scratch: str, size: int, uid: int) -> str | None:
    """A small tmpfs as the slot's scratch: a quota for the whole directory (bytes and inodes), gone with the slot."""
    opts = f"size={max(size, 1 << 16)},nr_inodes={SCRATCH_INODES},mode=0700,uid={uid},gid={uid}"
    try:
        _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
    except OSError as e:
        return str(e)
    return None


def mount_proc() -> str | None:
    """A /proc of the slot's PID namespace: children see only their own slot's processes."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        return str(e)
    return None


def python_blocked(paths: list[str]) -> bool:
    return any(os.path.isdir(p) and _blocked_ancestor(p) is not None for p in paths)


def _private_dirs(home: str) -> set[str]:
    return {d for d in (home, "/root", "/home") if d not in ("", "/") and os.path.isdir(d)}


def hide_private_dirs(paths: list[str], staging: str, home: str) -> str | None:
    """In the slot's mount namespace, cover home directories (the user's keys and tokens, e.g.
    ~/.cache/huggingface/token) and every directory that hides the Python installation from other users with an
    empty tmpfs, and bind the installation back in. Programs can then import the standard library while the rest of
    those directories is not even visible to them. Returns None on success."""
    hidden: dict[str, set[str]] = {d: set() for d in _private_dirs(home)}
    for path in paths:
        if os.path.isdir(path) and (top := _blocked_ancestor(path)) is not None:
            hidden.setdefault(top, set())
    for top in list(hidden):
        if staging.startswith(top + os.sep) or any(top != other and top.startswith(other + os.sep) for other in hidden):
            del hidden[top]  # covered by a directory above it
    for path in paths:
        for top in hidden:
            if os.path.isdir(path) and (path == top or path.startswith(top + os.sep)):
                hidden[top].add(os.path.abspath(path))
    if not hidden:
        return None
    try:
        os.makedirs(staging, mode=0o700, exist_ok=True)
        for n, (top, inside) in enumerate(sorted(hidden.items())):
            keep = sorted(p for p in inside if not any(p != q and p.startswith(q + os.sep) for q in inside))
            held = []
            for i, path in enumerate(keep):
                hold = os.path.join(staging, f"{n}-{i}")
                os.mkdir(hold, 0o700)
                _mount(path, hold, None, MS_BIND | MS_REC)
                held.append((hold, path))
            _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
            for hold, path in held:
                os.makedirs(path, mode=0o755, exist_ok=True)
                _mount(hold, path, None, MS_BIND | MS_REC)
    except OSError as e:
        return str(e)
    return None


def no_new_privs() -> str | None:
    """Required by Landlock and unprivileged seccomp; also stops setuid binaries from gaining privileges."""
    return None if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 else _errno_fail("prctl(NO_NEW_PRIVS)")


# Landlock (linux/landlock.h). Access rights by ABI version; reads stay allowed everywhere.
_LL_WRITE_FS = {
    1: (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12),
    2: 1 << 13,  # REFER
    3: 1 << 14,  # TRUNCATE
    5: 1 << 15,  # IOCTL_DEV
}
_LL_NET = (1 << 0) | (1 << 1)  # BIND_TCP, CONNECT_TCP (ABI 4)
_LL_SCOPE = (1 << 0) | (1 << 1)  # ABSTRACT_UNIX_SOCKET, SIGNAL (ABI 6)
_SYS_LL_CREATE, _SYS_LL_ADD_RULE, _SYS_LL_RESTRICT = 444, 445, 446


def landlock_scratch_only(scratch: str) -> tuple[int, str | None]:
    """Landlock: file writes, deletes and renames only beneath `scratch`; no TCP; no signals or abstract sockets
    leaving the sandbox. Works for any uid (root included). Returns (ABI version, error or None)."""
    abi = _libc.syscall(_SYS_LL_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return 0, _errno_fail("landlock unavailable")
    fs = 0
    for version, bits in _LL_WRITE_FS.items():
        if abi >= version:
            fs |= bits
    attr = struct.pack("QQQ", fs, _LL_NET if abi >= 4 else 0, _LL_SCOPE if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    buf = ctypes.create_string_buffer(attr, len(attr))
    rs = _libc.syscall(_SYS_LL_CREATE, buf, ctypes.c_size_t(size), 0)
    if rs < 0:
        return abi, _errno_fail("landlock_create_ruleset")
    try:
        dirfd = os.open(scratch, os.O_PATH | os.O_DIRECTORY)
        try:
            rule = ctypes.create_string_buffer(struct.pack("=Qi", fs, dirfd), 12)
            if _libc.syscall(_SYS_LL_ADD_RULE, ctypes.c_int(rs), 1, rule, 0) != 0:
                return abi, _errno_fail("landlock_add_rule")
        finally:
            os.close(dirfd)
        if _libc.syscall(_SYS_LL_RESTRICT, ctypes.c_int(rs), 0) != 0:
            return abi, _errno_fail("landlock_restrict_self")
    finally:
        os.close(rs)
    return abi, None


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def compile_filter(syscalls: list[str]) -> bytes:
    """A deny-list seccomp filter (EPERM) compiled to BPF with libseccomp (via pyseccomp).

    Compiled once in the host and handed to workers as bytes, so a worker neither loads libseccomp (a smaller
    process forks faster) nor compiles per program: installing it in a child is one prctl call.
    """
    import pyseccomp

    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in syscalls:
        try:
            flt.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            pass  # not a syscall on this architecture (e.g. fork on arm64)
    r, w = os.pipe()
    try:
        with os.fdopen(w, "wb", closefd=False) as f:
            flt.export_bpf(f)
        os.close(w)
        w = -1
        code = b""
        while chunk := os.read(r, 65536):
            code += chunk
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return code


class SeccompProgram:
    """A compiled filter held in memory, ready for `install` (in the worker once, or in each forked child)."""

    def __init__(self, bpf: bytes):
        self._code = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._code))

    def install(self) -> str | None:
        ok = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) == 0
        return None if ok else _errno_fail("seccomp")


def child_rlimits(cpu_s: float, address_space: int, file_bytes: int) -> None:
    """Per-program limits: CPU time (a SIGPROF timer at `cpu_s`, fractions allowed; RLIMIT_CPU one second later as
    the backstop a program cannot catch), address space (MemoryError), file size, open files, and no processes at
    all (enforced for non-root uids; the seccomp filter covers the rest)."""
    signal.setitimer(signal.ITIMER_PROF, cpu_s)
    cpu = int(cpu_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def address_space_in_use() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
