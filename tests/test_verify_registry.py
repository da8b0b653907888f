"""`verify_pending` and `mixdistill verify` against a registry: executions and verdicts written in bulk, re-verification
only for missing verdicts or a newer rule version, stored executions reused, failures classified."""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from mixdistill.cli import app
from mixdistill.registry import Registry
from mixdistill.verify import rules
from mixdistill.verify.pipeline import verify_pending
from mixdistill.verify.sandbox import SANDBOX_VERSION, Sandbox, SandboxLimits

LIMITS = SandboxLimits(timeout_s=1.5, cpu_s=1.0)

PROBLEMS = [
    {"problem_id": "p-num", "task": "svamp", "question": "3 + 4?", "answer_type": "number", "gold_text": "7",
     "gold_number": 7.0, "gold_bool": None, "source": "t", "source_id": "1"},
    {"problem_id": "p-bool", "task": "strategyqa", "question": "Is water wet?", "answer_type": "bool",
     "gold_text": "yes", "gold_number": None, "gold_bool": True, "source": "t", "source_id": "2"},
    {"problem_id": "p-nogold", "task": "custom", "question": "?", "answer_type": "number", "gold_text": "",
     "gold_number": None, "gold_bool": None, "source": "t", "source_id": "3"},
]
GENERATIONS = {  # request_key: (problem, mode, status, response)
    "pot-ok": ("p-num", "pot", "ok", "```python\na = 3\nb = 4\nans = a + b\n```"),
    "pot-wrong": ("p-num", "pot", "ok", "ans = 3 * 4"),
    "pot-list": ("p-num", "pot", "ok", "ans = [7]"),
    "pot-loop": ("p-num", "pot", "ok", "while True:\n    pass"),
    "pot-forbidden": ("p-num", "pot", "ok", "import os\nos.system('true')\nans = 7"),
    "pot-noprog": ("p-num", "pot", "ok", "I think the answer is seven."),
    "pot-nan": ("p-num", "pot", "ok", "ans = float('nan')"),
    "pot-nogold": ("p-nogold", "pot", "ok", "ans = 1"),
    "cot-ok": ("p-num", "cot", "ok", "3 + 4 = 7. The answer is 7."),
    "cot-wrong": ("p-num", "cot", "ok", "The answer is 8."),
    "cot-none": ("p-num", "cot", "ok", "I do not know."),
    "cot-bool": ("p-bool", "cot", "ok", "Water makes things wet. So the answer is yes."),
    "cot-failed-call": ("p-num", "cot", "error", None),
}
EXPECTED = {  # request_key: (correct, reason)
    "pot-ok": (True, "correct"),
    "pot-wrong": (False, "wrong-answer"),
    "pot-list": (False, "non-numeric"),
    "pot-loop": (False, "timeout"),
    "pot-forbidden": (False, "forbidden"),
    "pot-noprog": (False, "no-answer"),
    "pot-nan": (False, "non-finite"),
    "pot-nogold": (False, "gold-missing"),
    "cot-ok": (True, "correct"),
    "cot-wrong": (False, "wrong-answer"),
    "cot-none": (False, "no-answer"),
    "cot-bool": (True, "correct"),
}


def _seed(reg: Registry) -> None:
    reg.insert("problems", PROBLEMS)
    reg.insert("teachers", [{"teacher_id": "t1", "name": "fake", "provider": "replay", "model": "m"}])
    reg.insert("generations", [
        {"request_key": key, "teacher_id": "t1", "prompt_id": "pr", "problem_id": pid, "mode": mode,
         "sample_index": 0, "status": status, "response_text": text}
        for key, (pid, mode, status, text) in GENERATIONS.items()
    ])


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=LIMITS) as sb:
        yield sb


def test_verify_writes_executions_and_verdicts(registry_path, sandbox):
    with Registry.open(registry_path) as reg:
        _seed(reg)
        summary = verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        verdicts = {r["request_key"]: r for r in reg.query("SELECT * FROM verdicts").to_dicts()}
        executions = {r["request_key"]: r for r in reg.query("SELECT * FROM executions").to_dicts()}
    assert {k: (v["correct"], v["reason"]) for k, v in verdicts.items()} == EXPECTED
    version = rules.get_rule("strict").version
    assert all(v["rule"] == "strict" and v["rule_version"] == version for v in verdicts.values())
    assert "cot-failed-call" not in verdicts  # a failed teacher call has nothing to verify
    assert verdicts["pot-ok"]["extracted"] == "7" and verdicts["cot-wrong"]["extracted"] == "8"
    assert verdicts["cot-bool"]["extracted"] == "yes"
    pot_keys = {k for k, (_, mode, _, _) in GENERATIONS.items() if mode == "pot"}
    assert set(executions) == pot_keys
    assert all(e["sandbox_version"] == SANDBOX_VERSION for e in executions.values())
    assert executions["pot-loop"]["status"] == "timeout"
    assert executions["pot-noprog"]["error_class"] == "NoProgram"
    assert executions["pot-forbidden"]["status"] == "forbidden"
    assert executions["pot-list"]["answer"] == "[7]" and executions["pot-list"]["answer_number"] is None
    # each execution keeps the program it ran (the fenced block, not the response), none where there was none
    assert executions["pot-ok"]["program"] == "a = 3\nb = 4\nans = a + b"
    assert executions["pot-wrong"]["program"] == "ans = 3 * 4" and executions["pot-noprog"]["program"] is None
    assert (summary.pending, summary.verified, summary.correct) == (12, 12, 3)
    assert summary.executed == 7 and summary.reused_executions == 0  # the no-program response is not run
    assert summary.reasons["timeout"] == 1


def test_reverify_only_missing_or_newer_rule_versions(registry_path, sandbox, monkeypatch):
    with Registry.open(registry_path) as reg:
        _seed(reg)
        verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        again = verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        assert again.pending == 0  # nothing new: nothing runs

        # a new generation arrives: only it is verified
        reg.insert("generations", [{"request_key": "cot-late", "teacher_id": "t1", "prompt_id": "pr",
                                    "problem_id": "p-num", "mode": "cot", "sample_index": 1, "status": "ok",
                                    "response_text": "The answer is 7."}])
        late = verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        assert (late.pending, late.correct, late.executed) == (1, 1, 0)

        # a newer version of the rule re-judges everything, reusing the stored executions (no program re-runs)
        old = rules.get_rule("strict").version
        monkeypatch.setitem(rules.RULES, "strict", replace(rules.get_rule("strict"), revision="next"))
        newer = verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        assert newer.pending == 13 and newer.executed == 0 and newer.reused_executions == 8
        counts = dict(reg.query("SELECT rule_version, count(*) AS n FROM verdicts GROUP BY ALL").iter_rows())
        assert counts == {old: 13, "next+cot-stated": 13}  # the old verdicts stay, the views read the newest
        latest = reg.scalar("SELECT count(*) FROM latest_verdicts WHERE rule_version = 'next+cot-stated'")
        assert latest == 13
        # another CoT reading is another rule version: everything is re-judged, no program runs again
        other = verify_pending(reg, "strict", progress=False, sandbox=sandbox, cot_reading="expression")
        assert (other.pending, other.executed, other.rule_version) == (13, 0, "next+cot-expression")
        # so is an opt-in PoT convention: the stored executions keep what it reads
        printed = verify_pending(reg, "strict", progress=False, sandbox=sandbox, pot_conventions=("printed",))
        assert (printed.pending, printed.executed, printed.reused_executions) == (13, 0, 8)
        assert printed.rule_version == "next+cot-stated+pot-printed"
        runs = reg.query("SELECT status FROM runs WHERE kind = 'verify'")["status"].to_list()
        assert runs and set(runs) == {"done"}


def test_a_new_sandbox_version_reruns_programs_and_replaces_their_verdicts(registry_path, sandbox, monkeypatch):
    from mixdistill.verify import pipeline

    with Registry.open(registry_path) as reg:
        _seed(reg)
        verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        monkeypatch.setattr(pipeline, "SANDBOX_VERSION", "next")
        rerun = verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        assert (rerun.pending, rerun.executed) == (8, 7)  # every PoT generation; the one without a program is not run
        assert reg.scalar("SELECT count(*) FROM verdicts") == 12  # replaced, not duplicated
        versions = dict(reg.query("SELECT sandbox_version, count(*) FROM executions GROUP BY ALL").iter_rows())
        assert versions == {SANDBOX_VERSION: 8, "next": 8}
        latest = dict(reg.query("SELECT sandbox_version, count(*) FROM latest_executions GROUP BY ALL").iter_rows())
        assert latest == {"next": 8}  # the re-run superseded every earlier execution (m009's flags)
        assert verify_pending(reg, "strict", progress=False, sandbox=sandbox).pending == 0


def test_rules_are_independent_and_pot_rounding_differs(registry_path, sandbox):
    with Registry.open(registry_path) as reg:
        _seed(reg)
        reg.insert("generations", [{"request_key": "pot-198", "teacher_id": "t1", "prompt_id": "pr",
                                    "problem_id": "p-two", "mode": "pot", "sample_index": 0, "status": "ok",
                                    "response_text": "ans = 1.98"}])
        reg.insert("problems", [{**PROBLEMS[0], "problem_id": "p-two", "gold_text": "2", "gold_number": 2.0,
                                 "source_id": "9"}])
        verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        pot = verify_pending(reg, "pot-rounding", progress=False, sandbox=sandbox)
        assert pot.executed == 0 and pot.reused_executions == 9
        rows = reg.query("SELECT rule, correct FROM verdicts WHERE request_key = 'pot-198' ORDER BY rule").rows()
    assert rows == [("pot-rounding", True), ("strict", False)]


def test_audit_view_shows_failure_classes(registry_path, sandbox):
    with Registry.open(registry_path) as reg:
        _seed(reg)
        verify_pending(reg, "strict", progress=False, sandbox=sandbox)
        outcomes = dict(reg.query("SELECT outcome, sum(n) AS n FROM audit_failures GROUP BY outcome").iter_rows())
    # failures only, each under its own reason (a CoT that states no answer is `no-answer`, not `wrong-answer`)
    assert outcomes == {"timeout": 1, "forbidden": 1, "generation-error": 1, "wrong-answer": 2, "no-answer": 2,
                        "non-numeric": 1, "non-finite": 1, "gold-missing": 1}


def test_cli_verify(registry_path):
    with Registry.open(registry_path) as reg:
        _seed(reg)
    runner = CliRunner()
    result = runner.invoke(app, ["--registry", str(registry_path), "verify", "--no-progress", "--timeout", "1.5",
                                 "--cpu", "1", "--workers", "2", "--rule", "strict", "--rule", "pot-rounding"])
    assert result.exit_code == 0, result.output
    assert "rule strict v2+cot-stated: 12 verified" in result.output
    assert "rule pot-rounding v2+cot-stated: 12 verified" in result.output and "reused 8" in result.output


def test_cli_unknown_rule_is_one_line_exit_2(registry_path, monkeypatch, capsys):
    from mixdistill.cli import main

    monkeypatch.setattr("sys.argv", ["mixdistill", "--registry", str(registry_path), "verify", "--rule", "fuzzy"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown rule 'fuzzy'" in err and "Traceback" not in err
