"""Registry: migrations, refusal of newer/corrupt files, the cross-process lock, bulk writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import polars as pl
import pytest

from mixdistill.errors import RegistryError, RegistryLocked
from mixdistill.registry import SCHEMA_VERSION, Registry
from mixdistill.registry.migrations import MIGRATIONS
from mixdistill.registry.problems import save_problems, split_problems
from mixdistill.tasks import load_problems

EXPECTED_TABLES = {
    "problems", "problem_splits", "prompts", "teachers", "generations", "batches", "batch_requests", "executions",
    "verdicts",
    "runs", "corpora", "corpus_rows", "models", "evals", "eval_samples",
}
AUDIT_VIEWS = {"latest_verdicts", "latest_executions", "generation_facts", "audit_pass_rate", "audit_failures",
               "audit_mode_disagreement", "audit_cost"}


def test_migrations_create_schema_and_are_recorded(registry_path):
    with Registry.open(registry_path) as reg:
        assert reg.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
        assert EXPECTED_TABLES <= set(reg.table_counts())
        views = set(reg.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")["view_name"])
        assert AUDIT_VIEWS <= views
        applied = reg.query("SELECT version, name FROM schema_migrations ORDER BY version")
        assert applied["version"].to_list() == list(range(1, SCHEMA_VERSION + 1))
        assert applied["name"].to_list() == [m.__name__ for m in MIGRATIONS]
    with Registry.open(registry_path) as reg:  # reopening applies nothing twice
        assert reg.scalar("SELECT count(*) FROM schema_migrations") == SCHEMA_VERSION


def test_newer_schema_is_refused_and_left_untouched(registry_path):
    with Registry.open(registry_path):
        pass
    con = duckdb.connect(str(registry_path))
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, 'from_the_future')", [SCHEMA_VERSION + 1])
    con.close()
    before = registry_path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(RegistryError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than .* upgrade mixdistill"):
            with Registry.open(registry_path, read_only=read_only):
                pass
    assert registry_path.read_bytes() == before


def test_corrupted_file_is_refused(tmp_path):
    path = tmp_path / "broken.duckdb"
    path.write_bytes(b"not a database" * 500)
    with pytest.raises(RegistryError, match="broken.duckdb is not a valid DuckDB registry file"):
        with Registry.open(path):
            pass
    assert path.read_bytes() == b"not a database" * 500


def test_foreign_duckdb_file_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE sales (x INT)")
    con.close()
    with pytest.raises(RegistryError, match="not a mixdistill registry"):
        with Registry.open(path):
            pass


def test_read_only_open_of_missing_registry(tmp_path):
    with pytest.raises(RegistryError, match="no registry at"):
        with Registry.open(tmp_path / "absent.duckdb", read_only=True):
            pass


def test_second_writer_gets_a_clear_lock_error(registry_path):
    """A build in another process holds the file: a second writer gets RegistryLocked naming that process, not
    corruption; a reader is not refused: the writer answers its queries (issue 11: auditing while a build runs)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from mixdistill.registry import Registry
            with Registry.open({str(registry_path)!r}) as reg:
                reg.con.execute("INSERT INTO runs (run_id, kind, status) VALUES ('r1', 'build', 'running')")
                print("ready", flush=True)
                sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(RegistryLocked, match=rf"locked by another build \(process {holder.pid}\)"):
            with Registry.open(registry_path):
                pass
        with Registry.open(registry_path, read_only=True) as reg:
            assert reg.writer_pid == holder.pid
            assert reg.scalar("SELECT status FROM runs WHERE run_id = 'r1'") == "running"
    finally:
        holder.communicate("\n", timeout=30)
    with Registry.open(registry_path) as reg:  # released and intact
        assert reg.scalar("SELECT status FROM runs WHERE run_id = 'r1'") == "running"


def test_bulk_insert_is_idempotent_and_replace_overwrites(registry_path):
    with Registry.open(registry_path) as reg:
        rows = pl.DataFrame({"request_key": ["k1", "k2"], "rule": ["strict"] * 2, "rule_version": ["1"] * 2,
                             "correct": [True, False]})
        assert reg.insert("verdicts", rows) == 2
        assert reg.insert("verdicts", rows) == 0
        assert reg.insert("verdicts", rows.with_columns(correct=pl.lit(True)), on_conflict="replace") == 2
        assert reg.scalar("SELECT count_if(correct) FROM verdicts") == 2
        assert reg.insert("verdicts", []) == 0


def test_insert_on_conflict_error_stores_nothing_of_a_batch_with_a_stored_key(registry_path):
    with Registry.open(registry_path) as reg:
        row = {"rule": "strict", "rule_version": "1", "correct": True}
        assert reg.insert("verdicts", [{"request_key": "k1", **row}], on_conflict="error") == 1
        with pytest.raises(duckdb.ConstraintException):
            reg.insert("verdicts", [{"request_key": "k2", **row}, {"request_key": "k1", **row}], on_conflict="error")
        assert reg.query("SELECT request_key FROM verdicts")["request_key"].to_list() == ["k1"]
        assert reg.insert("verdicts", [{"request_key": "k2", **row}], on_conflict="error") == 1  # usable after


def test_transaction_rolls_back_everything(registry_path):
    with Registry.open(registry_path) as reg:
        with pytest.raises(ZeroDivisionError):
            with reg.transaction():
                reg.insert("runs", [{"run_id": "a", "kind": "build", "status": "running"}])
                1 / 0
        assert reg.scalar("SELECT count(*) FROM runs") == 0


def test_save_problems_keeps_split_order_and_shares_problems(registry_path, shared_data):
    with Registry.open(registry_path) as reg:
        for split in ("full", "test"):
            _, problems = load_problems("svamp", split, shared_data)
            save_problems(reg, "svamp", split, problems)
        assert reg.scalar("SELECT count(*) FROM problems") == 1000
        test = split_problems(reg, "svamp", "test")
        assert test.height == 200
        assert test["problem_id"].to_list() == [p.problem_id for p in load_problems("svamp", "test", shared_data)[1]]


def test_audit_views_keep_rules_apart_and_count_each_generation_once(registry_path):
    with Registry.open(registry_path) as reg:
        reg.insert("problems", [{"problem_id": "p1", "task": "t", "question": "q", "answer_type": "number",
                                 "gold_text": "5", "gold_number": 5.0, "source": "s", "source_id": "1"}])
        reg.insert("teachers", [{"teacher_id": "tid", "name": "teach", "provider": "openai", "model": "m"}])
        reg.insert("generations", [{"request_key": k, "teacher_id": "tid", "prompt_id": "pp", "problem_id": "p1",
                                    "task": "t", "mode": "pot", "sample_index": i, "status": "ok", "cost_usd": 0.5}
                                   for i, k in enumerate(["g1", "g2"])])
        reg.insert("executions", [{"request_key": "g1", "sandbox_version": v, "status": "error",
                                   "error_class": "ZeroDivisionError"} for v in ("1", "2")])
        reg.insert("executions", [{"request_key": "g2", "sandbox_version": "2", "status": "ok", "answer": "5"}])
        reg.insert("verdicts", [
            {"request_key": "g1", "rule": r, "rule_version": "1", "correct": False} for r in ("strict", "pot-rounding")
        ] + [
            {"request_key": "g2", "rule": "strict", "rule_version": "1", "correct": False},
            {"request_key": "g2", "rule": "strict", "rule_version": "2", "correct": True},  # a newer rule version
            {"request_key": "g2", "rule": "pot-rounding", "rule_version": "1", "correct": True},
        ])
        rates = reg.query("SELECT rule, generated, verified, correct, pass_rate FROM audit_pass_rate ORDER BY rule")
        assert rates.rows() == [("pot-rounding", 2, 2, 1, 0.5), ("strict", 2, 2, 1, 0.5)]
        failures = reg.query("SELECT rule, outcome, error_class, n FROM audit_failures ORDER BY rule, outcome")
        assert failures.rows() == [  # failures only: the correct verdicts are in audit_pass_rate
            ("pot-rounding", "error", "ZeroDivisionError", 1), ("strict", "error", "ZeroDivisionError", 1),
        ]
        cost = reg.query("SELECT rule, cost_usd, verified_correct, cost_per_verified FROM audit_cost ORDER BY rule")
        assert cost.rows() == [("pot-rounding", 1.0, 1, 1.0), ("strict", 1.0, 1, 1.0)]


def test_tracked_runs_record_done_failed_and_interrupted(registry_path):
    from mixdistill.registry.runs import tracked_run

    with Registry.open(registry_path) as reg:
        with tracked_run(reg, "build", "ok-run"):
            pass
        with pytest.raises(ValueError):
            with tracked_run(reg, "build", "bad-run"):
                raise ValueError("bad column 'x'\nsecond line")
        with pytest.raises(KeyboardInterrupt):
            with tracked_run(reg, "verify", "stopped-run"):
                raise KeyboardInterrupt
        rows = reg.query("SELECT name, kind, status, error, finished_at IS NOT NULL AS ended FROM runs ORDER BY name")
        assert rows.rows() == [
            ("bad-run", "build", "failed", "ValueError: bad column 'x'", True),
            ("ok-run", "build", "done", None, True),
            ("stopped-run", "verify", "interrupted", "interrupted", True),
        ]


def test_append_stores_a_whole_stream_and_goes_with_a_failed_transaction(registry_path):
    from mixdistill.workspace import Workspace

    rows = ("SELECT 'c1' AS corpus_id, 'cot' AS config, 'train' AS split, 'r' || i AS row_id, 'k' || i AS request_key,"
            " 'p' || i AS problem_id FROM range(120000) t(i)")  # more than one Arrow batch
    with Registry.open(registry_path) as reg, Workspace() as ws:
        assert reg.append("corpus_rows", ws.stream(rows)) == 120_000
        with pytest.raises(RuntimeError), reg.transaction():
            reg.append("corpus_rows", ws.stream(rows.replace("'c1'", "'c2'")))
            raise RuntimeError("interrupted")
        assert reg.query("SELECT corpus_id, count(*) AS n, count(DISTINCT row_id) AS ids FROM corpus_rows GROUP BY 1"
                         ).rows() == [("c1", 120_000, 120_000)]
