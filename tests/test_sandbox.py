"""The sandbox's contract: typed results, answers from `ans` or `solution()`, bad input classified, pool recovery."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import pytest

from mixdistill.verify.sandbox import STATUSES, ExecResult, Sandbox, SandboxError, SandboxLimits, default_slots, \
    looks_long

LIMITS = SandboxLimits(timeout_s=2.0, cpu_s=1.0, memory_mb=256, max_output_chars=100, max_source_bytes=200_000)


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, limits=LIMITS) as sandbox:
        yield sandbox


def test_answer_from_ans_and_from_solution(sb):
    res = sb.run("a = 3\nb = 4\nans = a * b")
    assert res == ExecResult("ok", "12", 12.0, "number", "", None, None, res.runtime_s)
    assert res.runtime_s >= 0
    pal = sb.run("def solution():\n    apples = 5\n    return apples / 2")
    assert (pal.status, pal.answer_number) == ("ok", 2.5)
    both = sb.run("ans = 1\ndef solution():\n    return 2")
    assert both.answer_number == 1  # `ans` wins, as in the PoT repo


@pytest.mark.parametrize(
    "program, status, error_class",
    [
        ("x = 1", "no-answer", None),
        ("ans = None", "no-answer", None),
        ("ans = undefined_name + 1", "error", "NameError"),
        ("ans = 1 / 0", "error", "ZeroDivisionError"),
        ("ans = (1 +", "error", "SyntaxError"),
        ("ans = 1\x00 + 2", "error", None),  # null bytes: SyntaxError or ValueError by Python version
        ("raise KeyboardInterrupt", "error", "KeyboardInterrupt"),
        ("def solution():\n    raise ValueError('no')", "error", "ValueError"),
    ],
)
def test_failures_are_classified(sb, program, status, error_class):
    res = sb.run(program)
    assert res.status == status
    if error_class:
        assert res.error_class == error_class and res.error_message is not None


def test_answer_kinds(sb):
    programs = {
        "int": "ans = 10 ** 3",
        "float": "ans = 0.1 + 0.2",
        "bool": "ans = 3 > 2",
        "fraction": "from fractions import Fraction\nans = Fraction(3, 4)",
        "decimal": "from decimal import Decimal\nans = Decimal('2.50')",
        "list": "ans = [1, 2]",
        "str": "ans = 'forty-two'",
        "nan": "ans = float('nan')",
        "inf": "ans = float('inf')",
        "huge int": "ans = 10 ** 5000",
        "sympy": "import sympy\nx = sympy.Symbol('x')\nans = sympy.solve(x * 2 - 7, x)[0]",
        "complex": "ans = complex(2, 0)",
    }
    res = dict(zip(programs, sb.run_many(list(programs.values()))))
    assert all(r.status == "ok" for r in res.values()), res
    assert res["int"].answer_number == 1000 and res["int"].answer == "1000"
    assert res["float"].answer_number == pytest.approx(0.3)
    assert (res["bool"].answer, res["bool"].answer_kind) == ("True", "bool")
    assert res["fraction"].answer_number == 0.75
    assert res["decimal"].answer_number == 2.5
    assert (res["list"].answer, res["list"].answer_number, res["list"].answer_kind) == ("[1, 2]", None, "list")
    assert (res["str"].answer_kind, res["str"].answer_number) == ("str", None)
    assert math.isnan(res["nan"].answer_number)
    assert res["inf"].answer_number == math.inf
    assert res["huge int"].answer_number == math.inf and "bits" in res["huge int"].answer
    assert res["sympy"].answer_number == 3.5
    # bool and complex are not numbers (a numeric task judges them `non-numeric`)
    assert (res["complex"].answer, res["complex"].answer_number, res["complex"].answer_kind) == ("(2+0j)", None, "complex")
    assert res["bool"].answer_number is None


def test_stdout_head_truncated_and_never_invalid_utf8(sb):
    res = sb.run("print('a' * 1000)\nimport sys\nsys.stdout.buffer.write(b'\\xff\\xfe')\nprint('\\udcff')\nans = 1")
    assert res.status == "ok"
    assert len(res.stdout_head) == LIMITS.max_output_chars
    bad = sb.run("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe')\nprint('\\udcff')\nans = 2")
    bad.stdout_head.encode("utf-8")  # would raise on a lone surrogate
    assert bad.stdout_head.startswith("\ufffd")


def test_bad_input_is_classified_not_a_crash(sb):
    huge = "ans = 1\n" + "#" * 10_000_000
    results = sb.run_many([huge, b"ans = 1", "ans = 2"])  # type: ignore[list-item]
    assert (results[0].status, results[0].error_class) == ("error", "ProgramTooLarge")
    assert (results[1].status, results[1].error_class) == ("error", "InvalidProgram")
    assert results[2].answer_number == 2


def test_run_many_keeps_order_and_isolates_programs(sb):
    programs = [f"import math\nmath.pi = {i}\nans = math.pi" if i % 2 else "import math\nans = math.pi"
                for i in range(60)]
    results = sb.run_many(programs)
    for i, r in enumerate(results):
        assert r.answer_number == (i if i % 2 else math.pi)
    # programs with a `while` loop start first, and results still come back in input order
    looping = [f"n = 0\nwhile n < {i}:\n    n += 1\nans = n" if i % 3 == 0 else f"ans = {i}" for i in range(30)]
    assert [r.answer_number for r in sb.run_many(looping)] == list(range(30))
    # files written by one program are gone for the next
    sb.run("open('left.txt', 'w').write('x')\nans = 1")
    assert sb.run("import os\nans = len(os.listdir('.'))").answer_number == 0


def test_programs_that_look_long_start_first():
    assert looks_long("n = 0\nwhile n < 3:\n    n += 1\nans = n")
    assert looks_long("for i in range(9):\n    for j in range(9):\n        ans = i * j")  # a brute-force search
    assert looks_long("for i in range(9):\n\tfor j in range(9):\n\t\tans = i * j")
    assert not looks_long("ans = 0\nfor i in range(9):\n    ans += i\nfor j in range(3):\n    ans -= j")
    assert not looks_long("forward = 3\nans = forward * 2")


def test_long_looking_programs_are_dealt_one_per_slot_at_a_time():
    """So that the few programs that run into the CPU limit overlap on every CPU instead of queueing on one slot."""
    from collections import deque

    from mixdistill.verify.sandbox import _Proc, _Run

    pool, slots = Sandbox(workers=2), [_Proc(None, -1, -1), _Proc(None, -1, -1)]
    run = _Run([None] * 40, dict.fromkeys(range(40), b""), deque(range(4, 40)), deque(range(4)), {0, 1, 2, 3})
    for slot in slots:
        pool._feed(slot, run)
    assert [[i for i in slot.pending if i in run.long_ids] for slot in slots] == [[0], [1]]
    assert list(run.long) == [2, 3] and all(len(slot.pending) == 16 for slot in slots)
    slots[0].pending.popleft()  # slot 0's long program ended: it takes the next one behind its queue
    pool._feed(slots[0], run)
    assert list(slots[0].pending)[-1] == 2 and list(run.long) == [3]


def test_one_slot_per_core_each_pinned_to_its_own(sb):
    cores = sorted(os.sched_getaffinity(0))
    assert default_slots() == len(cores)
    with Sandbox(limits=LIMITS) as pool:
        assert len(pool._procs) == len(cores)
    # every child runs on its slot's one core; two slots on a machine of two or more cores use two of them
    probe = "import os\nans = sorted(os.sched_getaffinity(0))"
    seen = {r.answer for r in sb.run_many([probe] * 40)}
    assert seen <= {f"[{c}]" for c in cores}, seen
    assert len(seen) == min(2, len(cores)), seen


def test_scratch_writes_and_cwd(sb):
    res = sb.run("with open('note.txt', 'w') as f:\n    f.write('hi')\nans = open('note.txt').read()")
    assert (res.status, res.answer) == ("ok", "hi")


def test_isolation_report_and_status_vocabulary(sb):
    assert set(sb.isolation) >= {"network namespace", "IPC namespace", "PID namespace", "private /proc", "uid per slot",
                                 "scratch quota", "private directories hidden", "no_new_privs", "landlock", "seccomp",
                                 "rlimits"}
    assert all(v == "on" or v.startswith(("on (", "off: ")) for v in sb.isolation.values()), sb.isolation
    assert STATUSES == ("ok", "error", "timeout", "memory", "forbidden", "no-answer", "crashed")


def test_to_row_matches_the_executions_table(registry_path):
    from mixdistill.registry import Registry

    row = ExecResult("ok", "1", 1.0, "number").to_row()
    assert set(row) == {"status", "answer", "answer_number", "stdout_head", "error_class", "error_message", "runtime_s",
                        "printed", "first_answer", "first_number"}
    with Registry.open(registry_path) as reg:
        columns = set(reg.query("SELECT * FROM executions LIMIT 0").columns)
    assert set(row) <= columns


def test_sandbox_must_be_started():
    with pytest.raises(SandboxError):
        Sandbox(workers=1).run("ans = 1")


def test_a_dead_worker_is_replaced_and_its_batch_retried():
    with Sandbox(workers=1, limits=LIMITS) as sb:
        first = sb._procs[0].popen.pid
        # the worker is killed from outside while it runs a slow program; every program still gets a result
        programs = ["import time\ntime.sleep(1.0)\nans = 1"] + [f"ans = {i}" for i in range(2, 6)]
        import threading

        threading.Timer(0.2, lambda: os.killpg(first, signal.SIGKILL)).start()
        results = sb.run_many(programs)
        assert sb._procs[0].popen.pid != first
    assert all(r is not None for r in results)
    assert [r.answer_number for r in results[1:]] == [2, 3, 4, 5]
    assert results[0].status in {"ok", "error"}


def test_sandbox_module_does_not_need_the_registry():
    code = ("import sys\nfrom mixdistill.verify.sandbox import Sandbox\n"
            "assert 'mixdistill.registry' not in sys.modules and 'duckdb' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_sandbox_command_runs_all_three_ways(tmp_path):
    """The benchmark's code path on a small stand-in for the published files (the figures come from the real ones)."""
    import json

    from typer.testing import CliRunner

    from mixdistill.cli import app
    from mixdistill.verify.bench import POT_OUTPUTS

    for k, rel in enumerate(POT_OUTPUTS):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"prompt": "header line, skipped"})]
        lines += [json.dumps({"generated": [f"a = {i}\nans = a * {k + 2}"], "answer": 1.0}) for i in range(20)]
        lines.append(json.dumps({"generated": ["while True:\n    pass"], "answer": 1.0}))
        path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "bench", "sandbox", "--workers", "2",
                                      "--timeout", "0.5", "--cpu", "0.3", "--naive-limit", "4"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "42 programs" in out and "targets (all 42 programs)" in out
    assert "Without the 2 that hit the limit" in out
    missing = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "nowhere"), "bench", "sandbox"])
    assert missing.exit_code != 0 and "missing benchmark file" in str(missing.exception)


def test_opt_in_pot_conventions_printed_and_first_of_tuple(sb):
    """`printed` and `first-of-tuple` are off by default, enter the rule version, and judge from the stored
    execution (no re-run)."""
    from mixdistill.verify.pipeline import judge_execution
    from mixdistill.verify.rules import get_rule

    printed, tupled, chatty = sb.run_many([
        "x = 6 * 7\nprint('working...')\nprint(x)",
        "def solution():\n    return 42, 'forty-two'\nans = solution()",
        "print('the total is 42')",
    ])
    assert (printed.status, printed.printed, tupled.first_answer, tupled.first_number) == ("no-answer", "42", "42", 42)
    plain, opted = get_rule("strict"), get_rule("strict", pot_conventions=["printed", "first-of-tuple"])
    assert opted.version == "2+cot-stated+pot-first-of-tuple+printed" and plain.version == "2+cot-stated"

    def judged(rule, r):
        return judge_execution(rule, "number", 42.0, None, r.status, r.answer, r.answer_number, r.printed,
                               r.first_answer, r.first_number)

    assert [judged(plain, r).reason for r in (printed, tupled)] == ["no-answer", "non-numeric"]
    assert [judged(opted, r).correct for r in (printed, tupled)] == [True, True]
    assert judged(opted, chatty).reason == "no-answer"  # the last line must be one number, not a sentence with one
