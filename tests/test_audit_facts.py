"""m009: the audit views read a generation's `task` and `latest` flags kept by the writers, and answer exactly as the
window-based views before them."""

from __future__ import annotations

import random
import shutil

import duckdb

from fakes.registries import registry_at_version
from mixdistill.registry import Registry

VIEWS = ("latest_verdicts", "latest_executions", "generation_facts", "audit_pass_rate", "audit_failures",
         "audit_mode_disagreement", "audit_cost", "audit_reasoning")


def _schema8_registry(path, seed: int = 7) -> None:
    """A registry at schema version 8 with histories the views must rank: several rule versions and sandbox versions
    per generation, two rules, CoT and PoT of one problem that disagree, failed executions, generations never judged."""
    rnd = random.Random(seed)
    con = registry_at_version(path, 8)
    con.execute("INSERT INTO teachers (teacher_id, name, provider, model) VALUES ('T1', 'a', 'openai', 'm1'),"
                " ('T2', 'b', 'anthropic', 'm2')")
    for p in range(30):
        con.execute("INSERT INTO problems (problem_id, task, question, answer_type, gold_text, source, source_id)"
                    " VALUES (?, ?, ?, 'number', '1', 's', ?)", [f"p{p}", f"task{p % 3}", f"q{p}?", str(p)])
        for teacher in ("T1", "T2"):
            for mode in ("cot", "pot"):
                key = f"{teacher}-{mode}-p{p}"
                con.execute(
                    "INSERT INTO generations (request_key, teacher_id, prompt_id, problem_id, mode, sample_index,"
                    " status, cost_usd, prompt_tokens, completion_tokens, reasoning_tokens) VALUES"
                    " (?, ?, 'P', ?, ?, 0, ?, ?, 10, 20, ?)",
                    [key, teacher, f"p{p}", mode, rnd.choice(["ok", "ok", "ok", "error"]), rnd.random(),
                     rnd.choice([None, 5])])
                if mode == "pot":
                    for day, version in enumerate(rnd.sample(["1", "2", "3"], rnd.randint(0, 3))):
                        con.execute(
                            "INSERT INTO executions (request_key, sandbox_version, status, error_class, created_at)"
                            " VALUES (?, ?, ?, ?, TIMESTAMP '2026-01-01' + INTERVAL (?) DAY)",
                            [key, version, s := rnd.choice(["ok", "error", "timeout"]),
                             "ZeroDivisionError" if s == "error" else None, day])
                for rule in ("strict", "pot-rounding"):
                    for day, version in enumerate(rnd.sample(["1", "2", "3"], rnd.randint(0, 3))):
                        con.execute(
                            "INSERT INTO verdicts (request_key, rule, rule_version, correct, reason, created_at)"
                            " VALUES (?, ?, ?, ?, ?, TIMESTAMP '2026-01-01' + INTERVAL (?) DAY)",
                            [key, rule, version, c := rnd.random() < 0.5, "correct" if c else "wrong-answer", day])
    con.close()


def _views(con, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Each view's rows; with `columns`, only those of each view (a later migration may add one, e.g. m011's
    `executions.program`, which `latest_executions` shows)."""
    pick = lambda v: ", ".join(f'"{c}"' for c in columns[v]) if columns else "*"  # noqa: E731
    return {v: con.execute(f"SELECT {pick(v)} FROM {v} ORDER BY ALL").fetchall() for v in VIEWS}


def _columns(con) -> dict[str, list[str]]:
    return {v: [d[0] for d in con.execute(f"SELECT * FROM {v} LIMIT 0").description] for v in VIEWS}


def test_migrated_views_answer_exactly_as_the_window_views(tmp_path):
    old, new = tmp_path / "old.duckdb", tmp_path / "new.duckdb"
    _schema8_registry(old)
    shutil.copy(old, new)
    con = duckdb.connect(str(old), read_only=True)
    before, columns = _views(con), _columns(con)
    superseded = con.execute("SELECT count(*) FROM verdicts").fetchone()[0] - len(before["latest_verdicts"])
    con.close()
    assert superseded > 20 and before["audit_mode_disagreement"] and before["audit_failures"]  # the data ranks
    with Registry.open(new) as reg:
        assert _views(reg.con, columns) == before
        assert reg.scalar("SELECT count(*) FROM generations g JOIN problems p USING (problem_id)"
                          " WHERE g.task IS DISTINCT FROM p.task") == 0
        assert reg.scalar("SELECT count_if(NOT latest) FROM verdicts") == superseded


def test_inserts_keep_the_latest_flags(registry_path):
    row = {"request_key": "g", "rule": "strict", "correct": False}
    with Registry.open(registry_path) as reg:
        reg.insert("verdicts", [{**row, "rule_version": "1"}, {**row, "rule": "pot-rounding", "rule_version": "1"}])
        reg.insert("verdicts", [{**row, "rule_version": "2", "correct": True}])  # a newer rule version supersedes
        assert reg.query("SELECT rule, rule_version, correct FROM latest_verdicts ORDER BY ALL").rows() == [
            ("pot-rounding", "1", False), ("strict", "2", True)]
        reg.insert("verdicts", [{**row, "rule_version": "1", "correct": True}], on_conflict="replace")
        assert reg.query("SELECT rule_version, correct FROM latest_verdicts WHERE rule = 'strict'").rows() == [
            ("2", True)]  # rewriting the older version's verdict does not make it the latest
        # executions: the most recent one wins, whatever its sandbox version
        reg.insert("executions", [{"request_key": "g", "sandbox_version": "2", "status": "ok"}])
        reg.insert("executions", [{"request_key": "g", "sandbox_version": "1", "status": "error"}])
        assert reg.query("SELECT sandbox_version, status FROM latest_executions").rows() == [("1", "error")]
        # a writer that knows nothing stored can be superseded skips the refresh: its rows are stored as the latest
        reg.insert("verdicts", [{**row, "request_key": "h", "rule_version": "1"}], supersedes=False)
        assert reg.scalar("SELECT latest FROM verdicts WHERE request_key = 'h'")


def test_verify_of_a_new_rule_version_supersedes_the_stored_verdicts(registry_path):
    from mixdistill.verify.pipeline import verify_pending
    from mixdistill.verify.rules import get_rule

    with Registry.open(registry_path) as reg:
        reg.insert("problems", [{"problem_id": "p1", "task": "t", "question": "q", "answer_type": "number",
                                 "gold_text": "5", "gold_number": 5.0, "source": "s", "source_id": "1"}])
        reg.insert("teachers", [{"teacher_id": "tid", "name": "teach", "provider": "openai", "model": "m"}])
        reg.insert("generations", [{"request_key": "g1", "teacher_id": "tid", "prompt_id": "pp", "problem_id": "p1",
                                    "task": "t", "mode": "cot", "sample_index": 0, "status": "ok",
                                    "response_text": "So the answer is 5."}])
        reg.insert("verdicts", [{"request_key": "g1", "rule": "strict", "rule_version": "0-old", "correct": False}])
        verify_pending(reg, "strict", progress=False)
        current = get_rule("strict").version
        assert reg.query("SELECT rule_version, correct FROM latest_verdicts").rows() == [(current, True)]
        assert reg.query("SELECT rule_version, latest FROM verdicts ORDER BY ALL").rows() == [
            ("0-old", False), (current, True)]


def test_a_journal_written_before_generations_kept_their_task_is_replayed_with_it(registry_path):
    import json

    from mixdistill.generate import GENERATION_SCHEMA
    from mixdistill.journal import journal_dir, replay

    with Registry.open(registry_path) as reg:
        reg.insert("problems", [{"problem_id": "p1", "task": "svamp", "question": "q", "answer_type": "number",
                                 "gold_text": "5", "source": "s", "source_id": "1"}])
        folder = journal_dir(reg)
        folder.mkdir(parents=True, exist_ok=True)
        line = {"request_key": "k1", "teacher_id": "T", "prompt_id": "P", "problem_id": "p1", "mode": "cot",
                "sample_index": 0, "status": "ok", "response_text": "5"}  # no "task": an older mixdistill's line
        (folder / "old-run.jsonl").write_text(json.dumps(line) + "\n")
        assert replay(reg, GENERATION_SCHEMA) == 1
        assert reg.query("SELECT request_key, task FROM generations").rows() == [("k1", "svamp")]
