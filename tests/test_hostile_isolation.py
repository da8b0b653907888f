"""Hostile programs aimed at the pool and at each other (written for this suite): crashing, corrupting or stalling a
slot, reaching a sibling, leaving state behind. Each test checks the program's status, the siblings' verdicts, the
host (files, SysV objects, processes) and the pool.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
import uuid

import pytest

from mixdistill.verify.pipeline import judge_execution
from mixdistill.verify.rules import get_rule
from mixdistill.verify.sandbox import Sandbox, SandboxLimits, remove_tree

LIMITS = dict(timeout_s=3.0, cpu_s=2.0, memory_mb=256, max_output_chars=200)
SIBLINGS = [f"x = {i}\nans = x * 2 + 1" for i in range(6)]
STRICT = get_rule("strict")

FORGED_BRACKETS = "import sys, os\nos.write(sys._getframe(1).f_locals['result_fd'], b'[' * 200000)\nos._exit(0)\n"
FORGED_HUGE_INT = ("import os, sys\nfd = sys._getframe(1).f_locals['result_fd']\n"
                   "os.write(fd, b'{\"status\": \"ok\", \"answer\": \"5\", \"answer_kind\": \"int\", \"runtime_s\": '"
                   " + b'9' * 400 + b'}')\nos._exit(0)\n")
REALTIME_SIGNAL = ("import fcntl, os, signal\nr, w = os.pipe()\nfcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())\n"
                   "fcntl.fcntl(r, fcntl.F_SETSIG, signal.SIGRTMIN + 2)\n"
                   "fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)\n"
                   "os.write(w, b'x')\nimport time\ntime.sleep(1)\nans = 1\n")
DEEP_TREE = "import os\nfor i in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\nans = 1\n"


def _siblings_right(results) -> bool:
    return [r.answer_number for r in results] == [2 * i + 1 for i in range(len(SIBLINGS))]


def _host_sysv() -> dict[str, int]:
    out = {}
    for kind in ("shm", "msg", "sem"):
        with open(f"/proc/sysvipc/{kind}") as f:
            out[kind] = len(f.read().splitlines()) - 1
    return out


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=1, limits=SandboxLimits(**LIMITS)) as sandbox:
        yield sandbox


def test_the_issue_reproducer_returns():
    start = time.monotonic()
    with Sandbox(workers=1) as sandbox:
        results = sandbox.run_many([FORGED_BRACKETS, "ans = 1", "ans = 2"])
    assert time.monotonic() - start < 30
    assert results[0].status == "crashed" and "unreadable result" in results[0].error_message
    assert [r.answer_number for r in results[1:]] == [1, 2]


@pytest.mark.parametrize(
    "name, program, status, number, reason",
    [
        ("forged 200k brackets", FORGED_BRACKETS, "crashed", None, "unreadable result"),
        # a forged result is only ever the program's own answer; a 400-digit number in it is not read as a number
        ("forged 400-digit int", FORGED_HUGE_INT, "ok", 5.0, None),
        ("400-digit int answer", "ans = 10 ** 400 + 7", "ok", float("inf"), None),
        ("real-time signal death", REALTIME_SIGNAL, "crashed", None, "killed by SIGRTMIN+2"),
        ("3000-deep tree", DEEP_TREE, {"ok", "error"}, None, None),
    ],
)
def test_crash_classes_cost_one_program(sb, name, program, status, number, reason):
    pid = sb._procs[0].popen.pid
    results = sb.run_many([SIBLINGS[0], program, *SIBLINGS[1:]])
    res = results.pop(1)
    assert res.status in (status if isinstance(status, set) else {status}), (name, res)
    if number is not None:
        assert res.answer_number == number
    if reason:
        assert reason in res.error_message
    assert _siblings_right(results), name
    assert sb._procs[0].popen.pid == pid, "the slot itself must survive every crash class"
    assert sb.run("import os\nans = len(os.listdir('.'))").answer_number == 0  # nothing left in scratch


def test_an_int_beyond_float_range_is_non_finite_never_a_crash(sb):
    for program in ("ans = 2 ** 1500", "ans = -(10 ** 5000)", "from fractions import Fraction\n"
                    "ans = Fraction(10 ** 400, 3)"):
        res = sb.run(program)
        assert res.status == "ok" and res.answer_number in (float("inf"), float("-inf")), res
        assert judge_execution(STRICT, "number", 5.0, None, res.status, res.answer, res.answer_number).reason \
            == "non-finite"


def test_the_judge_believes_no_lies(sb):
    programs = {
        "patched Fraction": "from fractions import Fraction\nFraction.__float__ = lambda self: 5.0\n"
                            "Fraction.__repr__ = lambda self: '5'\nans = Fraction(1, 3)",
        "claims sympy": "class Fake:\n    __module__ = 'sympy.core.numbers'\n    def __float__(self):\n"
                        "        return 5.0\nFake.__name__ = 'Integer'\nans = Fake()",
        "float subclass": "class F(float):\n    def __repr__(self):\n        return '5'\nans = F(3.0)",
        "complex": "ans = complex(5, 0)",
        "bool": "ans = True",
    }
    res = dict(zip(programs, sb.run_many(list(programs.values()))))
    judged = {k: judge_execution(STRICT, "number", 5.0, None, r.status, r.answer, r.answer_number)
              for k, r in res.items()}
    assert not any(j.correct for j in judged.values()), judged
    assert res["patched Fraction"].answer == "1/3" and abs(res["patched Fraction"].answer_number - 1 / 3) < 1e-12
    assert {judged[k].reason for k in ("claims sympy", "float subclass", "complex", "bool")} == {"non-numeric"}
    # on a yes/no task a bool is an answer
    assert judge_execution(STRICT, "bool", None, True, "ok", res["bool"].answer, None).correct


def test_state_left_behind_never_reaches_the_next_program(sb):
    results = sb.run_many([
        "import os\nos.chmod('.', 0)\nans = 1",
        "open('a.txt', 'w').write('fine')\nans = open('a.txt').read()",
        "import os\nos.mkdir('locked')\nopen('locked/f', 'w').write('x')\nos.chmod('locked', 0)\nans = 2",
        "import os\nans = len(os.listdir('.'))",
        # 150 MB in files of at most 1 MB each: the whole-directory quota stops it
        "for i in range(150):\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'0' * (1 << 20))\nans = 3",
        "import os\nans = len(os.listdir('.'))",
        "import os\nos.chmod('.', 0o755)\nans = 4",  # a mode change alone leaves no entry behind
        "import os\nans = oct(os.stat('.').st_mode & 0o7777)",
    ])
    assert results[1].answer == "fine"
    assert results[3].answer_number == 0 and results[5].answer_number == 0
    assert results[7].answer == "0o700", results[7]
    if sb.isolation["scratch quota"].startswith("on"):
        assert results[4].status == "error" and "No space left" in results[4].error_message


def test_a_slot_killed_twice_by_one_program_crashes_only_that_program():
    """The slot is killed from outside while the culprit runs; it is retried alone, killed again, and `crashed`;
    every program queued behind it still gets its own verdict."""
    culprit = "import time\ntime.sleep(1.0)\nans = 99"
    with Sandbox(workers=1, limits=SandboxLimits(**LIMITS)) as sandbox:
        kills: list[int] = []

        def killer():
            deadline = time.monotonic() + 20
            while len(kills) < 2 and time.monotonic() < deadline:
                proc = sandbox._procs[0]
                if proc.pending and proc.pending[0] == 0 and time.monotonic() - proc.last_progress > 0.3:
                    pid = proc.popen.pid
                    if pid not in kills:
                        kills.append(pid)
                        os.killpg(pid, signal.SIGKILL)
                time.sleep(0.02)

        thread = threading.Thread(target=killer)
        thread.start()
        results = sandbox.run_many([culprit, *SIBLINGS])
        thread.join()
        after = sandbox.run("ans = 7")
    assert len(kills) == 2
    assert results[0].status == "crashed" and "twice" in results[0].error_message
    assert _siblings_right(results[1:])
    assert after.answer_number == 7


@pytest.mark.parametrize("guard", [True, False], ids=["python-guard", "os-layers-only"])
def test_programs_cannot_see_each_other_or_the_host(tmp_path, guard):
    """SysV objects, a sibling's processes and scratch files, the host's own 0666 segment, memory inherited from
    earlier programs: none is reachable, with or without the Python guard."""
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x6D780000 + os.getpid() % 0xFFFF
    host_shm = libc.shmget(key, 4096, 0o1666)  # IPC_CREAT | 0666: a host segment a program must not touch
    assert host_shm >= 0
    libc.shmat.restype = ctypes.c_void_p
    addr = libc.shmat(host_shm, None, 0)
    ctypes.memmove(addr, b"host-data", 9)
    marker_head, marker_tail = f"zq{uuid.uuid4().hex[:12]}", uuid.uuid4().hex[:12]
    sysv_before = _host_sysv()
    try:
        secret = f"secret = '{marker_head}{marker_tail}'\nopen('mine.txt', 'w').write(secret)\nans = secret"
        sysv = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                f"ans = [libc.shmget({key}, 4096, 0o666), libc.shmget(0, 64 << 20, 0o1666), "
                "libc.msgget(0, 0o1666), libc.semget(0, 1, 0o1666)]")
        # reads its whole address space (ctypes: /proc/self/mem is closed to a process that changed uid)
        scan = ("import ctypes\nhead, tail = " + repr(marker_head) + ", " + repr(marker_tail) + "\nfound = 0\n"
                "for line in open('/proc/self/maps'):\n"
                "    span, perms = line.split()[:2]\n"
                "    lo, hi = (int(x, 16) for x in span.split('-'))\n"
                "    if not perms.startswith('r') or hi - lo > (1 << 28) or '[v' in line:\n        continue\n"
                "    data = ctypes.string_at(lo, hi - lo)\n"
                "    i = data.find(head.encode())\n"
                "    while i >= 0:\n"
                "        found += data[i + len(head):i + len(head) + len(tail)] == tail.encode()\n"
                "        i = data.find(head.encode(), i + 1)\n"
                "ans = found")
        procs = "import os\nans = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())"
        limits = SandboxLimits(**{**LIMITS, "cpu_s": 5.0, "timeout_s": 10.0}, python_guard=guard)
        with Sandbox(workers=2, limits=limits) as sandbox:
            if sandbox.isolation.get("seccomp") != "on":
                pytest.skip(f"seccomp not available here: {sandbox.isolation}")
            root = sandbox._scratch_root
            first = sandbox.run_many([secret] * 4 + SIBLINGS)
            scratch_dirs = [os.path.join(root, d) for d in os.listdir(root) if d.startswith("w")]
            peek = ("import os\nfound = []\n"
                    f"for d in {scratch_dirs!r}:\n"
                    "    try:\n        found.append(open(os.path.join(d, 'mine.txt')).read())\n"
                    "    except OSError:\n        pass\n"
                    "try:\n    found.append(str(os.listdir(os.path.dirname(os.getcwd()))))\nexcept OSError:\n    pass\n"
                    "ans = str(found)")
            second = sandbox.run_many([scan, scan, sysv, procs, procs, peek, peek, *SIBLINGS])
            host_procs_seen = second[3].answer
    finally:
        libc.shmdt(ctypes.c_void_p(addr))
        assert ctypes.string_at(libc.shmat(host_shm, None, 0), 9) == b"host-data"
        libc.shmctl(host_shm, 0, None)  # IPC_RMID
    assert all(r.answer == f"{marker_head}{marker_tail}" for r in first[:4]) and _siblings_right(first[4:])
    if guard:  # the guard refuses ctypes; what ctypes could reach is shown with the guard off
        assert [r.status for r in second[:3]] == ["forbidden"] * 3
    else:
        # no later program finds an earlier program's source or answer anywhere in its own memory
        assert [(r.status, r.answer_number) for r in second[:2]] == [("ok", 0), ("ok", 0)], second[:2]
        # SysV IPC refused (seccomp), and the host's segment is in another IPC namespace anyway
        assert second[2].status == "ok" and second[2].answer == "[-1, -1, -1, -1]", second[2]
    # a PID namespace per slot: a program sees its zygote (PID 1) and itself, never a sibling or the host
    seen = [int(p) for p in host_procs_seen.strip("[]").split(",")]
    assert len(seen) == 2 and seen[0] == 1 and os.getpid() not in seen[1:], host_procs_seen
    assert all(r.answer == "[]" for r in second[5:7]), second[5:7]
    assert _siblings_right(second[7:])
    assert _host_sysv() == sysv_before, "a program left a SysV object on the host"


def test_remove_tree_handles_any_depth(tmp_path):
    """The host-side cleanup (Sandbox.close) of a tree deeper than any path may be long, without recursion."""
    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    remove_tree(str(top))
    assert not top.exists()


def test_mixdistill_verify_returns_with_one_verdict_per_generation(registry_path):
    """Through the console script: every crash class among ordinary programs; the run ends, each crash is its own
    reason and every sibling keeps its verdict."""
    import subprocess
    import sys

    from mixdistill.registry import Registry

    crashers = {"forged": FORGED_BRACKETS, "rt-signal": REALTIME_SIGNAL, "deep": DEEP_TREE, "huge-int": "ans = 2 ** 1500"}
    programs = {**crashers, **{f"ok-{i}": f"ans = 3 + {i} - {i} + 4" for i in range(6)}}
    with Registry.open(registry_path) as reg:
        reg.insert("problems", [{"problem_id": "p", "task": "svamp", "question": "3 + 4?", "answer_type": "number",
                                 "gold_text": "7", "gold_number": 7.0, "gold_bool": None, "source": "t",
                                 "source_id": "1"}])
        reg.insert("teachers", [{"teacher_id": "t1", "name": "fake", "provider": "replay", "model": "m"}])
        reg.insert("generations", [
            {"request_key": key, "teacher_id": "t1", "prompt_id": "pr", "problem_id": "p", "mode": "pot",
             "sample_index": 0, "status": "ok", "response_text": text} for key, text in programs.items()])
    done = subprocess.run([sys.executable, "-m", "mixdistill", "--registry", str(registry_path), "verify",
                           "--workers", "1", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Registry.open(registry_path, read_only=True) as reg:
        verdicts = dict(reg.query("SELECT request_key, reason FROM verdicts").iter_rows())
        n = reg.scalar("SELECT count(*) FROM verdicts")
    assert n == len(programs)
    assert verdicts["forged"] == verdicts["rt-signal"] == "crashed"
    assert verdicts["huge-int"] == "non-finite" and verdicts["deep"] in {"wrong-answer", "error"}
    assert all(verdicts[f"ok-{i}"] == "correct" for i in range(6))


def test_an_unknown_cot_reading_is_one_line_naming_the_field(tmp_path, registry_path):
    import subprocess
    import sys

    recipe = tmp_path / "e.yaml"
    recipe.write_text("kind: eval\nname: e\nmodel: m\ntasks: [{task: svamp}]\ncot_reading: loose\n")
    done = subprocess.run([sys.executable, "-m", "mixdistill", "--registry", str(registry_path), "eval", str(recipe)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "cot_reading" in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
        done.stderr
    done = subprocess.run([sys.executable, "-m", "mixdistill", "--registry", str(registry_path), "verify",
                           "--cot-reading", "loose"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown CoT reading 'loose'" in done.stderr, done.stderr


def test_the_programs_frame_has_no_parent_holding_the_zygote(sb):
    """Walking up its frames and its open fds, a program finds only its own harness: its source, its result pipe."""
    sibling = "marker = 'sibling-" + uuid.uuid4().hex + "'\nans = marker"
    probe = (
        "import os, sys\nhits = []\nf = sys._getframe(1)\n"
        "while f is not None:\n"
        "    for k, v in f.f_locals.items():\n"
        "        kind = type(v).__name__\n"
        "        text = v.decode('latin-1') if isinstance(v, bytes) else v if isinstance(v, str) else ''\n"
        "        if kind in ('SeccompProgram', 'CDLL', 'Worker', 'ChildKit') \\\n"
        "                or k in ('cfg', 'kit', 'confine', 'seccomp', 'st', 'report') or 'sib' + 'ling-' in text \\\n"
        "                or isinstance(v, dict) and ('child_seccomp' in v or 'in_fd' in v):\n"
        "            hits.append(f'{f.f_code.co_name}.{k}:{kind}')\n"
        "    f = f.f_back\n"
        "ans = f\"{hits}|{sorted(int(x) for x in os.listdir('/proc/self/fd'))}\""
    )
    first, res = sb.run_many([sibling, probe])
    assert res.status == "ok", res
    hits, fds = res.answer.split("|")
    assert hits == "[]", hits
    # 0, 1, 2 (/dev/null), its own result pipe, and the fd of the listing itself: no pipe to the host or the zygote
    assert len(fds.strip("[]").split(",")) <= 5, fds


@pytest.mark.parametrize("guard", [True, False], ids=["guard", "os-only"])
def test_no_message_reaches_the_next_program_through_the_scratch_directory_itself(guard):
    """The scratch directory outlives its programs: an extended attribute or timestamps set on it must not carry a
    message to the next one (the Python guard off too: the OS layers hold alone)."""
    with Sandbox(workers=1, limits=SandboxLimits(**LIMITS, python_guard=guard)) as sb:
        before, = sb.run_many(["import os\ns = os.stat('.')\nans = f'{s.st_atime_ns} {s.st_mtime_ns}'"])
        results = sb.run_many([
            "import os\nos.setxattr('.', 'user.msg', b'hello')\nans = 1",
            "import os\nans = repr(os.listxattr('.'))",
            "import os\nos.utime('.', ns=(123456789, 987654321))\nans = 1",
            "import os\ns = os.stat('.')\nans = f'{s.st_atime_ns} {s.st_mtime_ns}'",
        ])
    assert results[0].status == "forbidden", results[0]
    assert results[1].answer == "[]", results[1]
    assert results[2].status == "ok" and results[3].answer == before.answer != "123456789 987654321", results[3]


def test_an_oversized_result_is_dropped_and_never_reaches_the_next_program(sb):
    """600 kB written to the result pipe (more than the zygote keeps): `crashed`, and the next program finds no byte
    of it in the zygote's buffers it inherited (kept and spilled parts are both zeroed)."""
    flood = "import os, sys\nos.write(sys._getframe(1).f_locals['result_fd'], b'Z' * 600_000)\nos._exit(0)\n"
    look = ("import sys\nb = sys.modules['mixdistill.verify._worker']._BUFFERS\n"
            "ans = sum(bytes(b[k]).count(b'Z') for k in ('view', 'spill'))")
    flooded, after = sb.run_many([flood, look])
    assert flooded.status == "crashed" and "unreadable result" in flooded.error_message, flooded
    assert after.status == "ok" and after.answer_number == 0, after


def test_no_module_within_reach_leads_to_ctypes_or_the_isolation_kit(sb):
    """`ctypes` is refused as an import; nor may a program pick it up from an attribute of a loaded module (the
    zygote's isolation module imports it and holds the libc handle and the seccomp kit)."""
    probe = (
        "import sys\nhits = []\n"
        "for name, mod in list(sys.modules.items()):\n"
        "    for attr, value in list(vars(mod).items()) if hasattr(mod, '__dict__') else []:\n"
        "        kind = type(value).__name__\n"
        "        label = getattr(value, '__name__', '') if kind == 'module' else ''\n"
        "        if label in ('ctypes', '_ctypes', 'mixdistill.verify.isolation') or kind in ('CDLL', 'SeccompProgram'):\n"
        "            hits.append(f'{name}.{attr}')\n"
        "ans = repr(sorted(hits))"
    )
    (res,) = sb.run_many([probe])
    assert res.status == "ok" and res.answer == "[]", res


NON_ROOT_UID = 1000
_NON_ROOT_PROBE = """
import os, sys
from mixdistill.verify.sandbox import Sandbox
token = os.path.join(os.environ["HOME"], ".cache", "huggingface", "token")
with Sandbox(workers=1) as sb:
    res = sb.run_many([f"ans = open({token!r}).read()", f"import os\\nans = len(os.listdir({os.environ['HOME']!r}))",
                       "ans = 6 * 7"])
    print(repr(([(r.status, r.answer) for r in res], sb.isolation)))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not all(os.path.exists(f"/usr/bin/{b}") for b in ("unshare", "setpriv")),
                    reason="needs root (to become an ordinary user for the test) and util-linux")
def test_on_a_non_root_host_the_users_home_is_hidden(tmp_path):
    """Run as an ordinary user (uid 1000) whose 0600 token sits in its home: programs cannot even see the home."""
    import ast
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="mixdistill-home-", dir="/tmp"))
    try:
        (home / ".cache" / "huggingface").mkdir(parents=True)
        (home / ".cache" / "huggingface" / "token").write_text("hf_not_for_programs")
        for p in (home, home / ".cache", home / ".cache" / "huggingface", home / ".cache" / "huggingface" / "token"):
            os.chown(p, NON_ROOT_UID, NON_ROOT_UID)
        os.chmod(home, 0o700)
        os.chmod(home / ".cache" / "huggingface" / "token", 0o600)
        base = sys.base_prefix
        stage = home.parent / (home.name + "-python")
        stage.mkdir()
        probe = home.parent / (home.name + "-probe.py")
        probe.write_text(_NON_ROOT_PROBE)
        os.chmod(probe, 0o644)
        # test harness only: this machine's Python lives under root's 0700 home; show it to uid 1000 in a private
        # mount namespace, as a user's own Python install would be
        top = "/" + base.strip("/").split("/")[0]
        script = (f"set -e; mount --bind {top} {stage}; mount -t tmpfs -o mode=0755 tmpfs {top}; "
                  f"mkdir -p {base}; mount --bind {stage}{base[len(top):]} {base}; "
                  f"cd /tmp; exec setpriv --reuid={NON_ROOT_UID} --regid={NON_ROOT_UID} --clear-groups "
                  f"{sys.executable} {probe}")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0 and "Operation not permitted" in done.stderr:
            pytest.skip(f"cannot set up the non-root run here: {done.stderr.strip()[-200:]}")
        assert done.returncode == 0, done.stderr
        results, isolation = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    finally:
        for leftover in (home, home.parent / (home.name + "-python"), home.parent / (home.name + "-probe.py")):
            subprocess.run(["rm", "-rf", str(leftover)], check=False)
    assert results[0][0] == "error" and results[1] == ("ok", "0") and results[2] == ("ok", "42"), results
    assert isolation["private directories hidden"].startswith("on"), isolation
    assert isolation["uid per slot"].startswith("off: not root"), isolation  # reported, never faked
