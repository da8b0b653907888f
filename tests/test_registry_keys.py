"""m008: the tables that grow with the corpus keep their keys without DuckDB indexes (registry.keys)."""

from __future__ import annotations

import duckdb
import polars as pl

from fakes.registries import registry_at_version
from mixdistill.registry import SCHEMA_VERSION, Registry
from mixdistill.registry.keys import KEYS

ROWS = {
    "problems": "('p1', 't', 'q?', 'number', '3', 3.0, NULL, 's', 's1', NULL, TIMESTAMP '2026-01-01'),"
                "('p0', 't', 'q0?', 'number', '1', 1.0, NULL, 's', 's0', 'mit', TIMESTAMP '2026-01-02')",
    "problem_splits": "('t', 'train', 'p1', 0), ('t', 'train', 'p0', 1)",
    "generations": "('k2', 'T', 'P', 'p1', 'cot', 0, '{}', 'ok', 'The answer is 3.', 'stop', NULL, 5, 7, 0.25, 0.5,"
                   " NULL, 'r', TIMESTAMP '2026-01-01', 'why', 2),"
                   "('k1', 'T', 'P', 'p0', 'pot', 0, '{}', 'error', NULL, NULL, 'boom', NULL, NULL, NULL, NULL,"
                   " NULL, 'r', TIMESTAMP '2026-01-01', NULL, NULL)",
    "executions": "('k2', 'v1', 'ok', '3', 3.0, '3', NULL, NULL, 0.1, TIMESTAMP '2026-01-01', '3', NULL, NULL)",
    "verdicts": "('k2', 'strict', '1', '3', true, 'correct', TIMESTAMP '2026-01-01'),"
                "('k2', 'strict', '2', '3', true, 'correct', TIMESTAMP '2026-01-03')",
    "corpus_rows": "('c', 'cot', 'train', 'r1', 'k2', 'p1')",
}


def _old_registry(path) -> dict[str, list[tuple]]:
    """A registry at schema version 7 (before m008) holding rows in every table m008 rebuilds."""
    con = registry_at_version(path, 7)
    for table, values in ROWS.items():
        con.execute(f"INSERT INTO {table} VALUES {values}")
    before = {t: (con.execute(f"SELECT * FROM {t}").fetchall(), [d[0] for d in con.description]) for t in ROWS}
    con.close()
    return before


def test_an_old_registry_migrates_keeps_its_rows_and_loses_only_the_key_indexes(registry_path):
    before = _old_registry(registry_path)
    with Registry.open(registry_path) as reg:
        assert reg.schema_version() == SCHEMA_VERSION
        for table, (rows, columns) in before.items():  # every row and column, in the same order (later migrations
            listed = ", ".join(columns)                 # add columns)
            assert reg.con.execute(f"SELECT {listed} FROM {table}").fetchall() == rows, table
        kinds = reg.con.execute("SELECT table_name, constraint_type FROM duckdb_constraints() "
                                "WHERE table_name IN ('problems', 'generations', 'verdicts')").fetchall()
        assert {k for _, k in kinds} == {"NOT NULL"}  # no PRIMARY KEY, so no ART index
        assert reg.scalar("SELECT count(*) FROM duckdb_indexes()") == 0
        assert reg.query("SELECT request_key, rule_version FROM latest_verdicts").rows() == [("k2", "2")]  # views too
        # defaults and NOT NULLs are kept
        reg.insert("verdicts", [{"request_key": "k1", "rule": "strict", "rule_version": "1", "correct": False}])
        assert reg.scalar("SELECT created_at IS NOT NULL FROM verdicts WHERE request_key = 'k1'")
        try:
            reg.execute("INSERT INTO generations (request_key) VALUES ('k3')")
            raise AssertionError("a generation without its NOT NULL columns was stored")
        except duckdb.ConstraintException:
            pass


def test_keyed_inserts_skip_replace_or_append_by_the_whole_key(registry_path):
    with Registry.open(registry_path) as reg:
        assert reg.scalar("SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
                          f"AND table_name IN {tuple(KEYS)}") == 0
        row = {"request_key": "k1", "rule": "strict", "rule_version": "1", "correct": True, "reason": "first"}
        # a key repeated within one call keeps its first row; a stored key is skipped
        assert reg.insert("verdicts", [row, {**row, "reason": "again"}]) == 1
        assert reg.insert("verdicts", [{**row, "reason": "later"}, {**row, "rule_version": "2"}]) == 1
        assert reg.query("SELECT rule_version, reason FROM verdicts ORDER BY 1").rows() == [("1", "first"), ("2", "first")]
        # replace: only the rows of the incoming keys go (the other rule version stays)
        assert reg.insert("verdicts", pl.DataFrame([{**row, "reason": "new"}]), on_conflict="replace") == 1
        assert reg.query("SELECT rule_version, reason FROM verdicts ORDER BY 1").rows() == [("1", "new"), ("2", "first")]
        # new: appended without a lookup (the caller knows the key is not stored)
        assert reg.insert("verdicts", [{**row, "rule": "pot-rounding"}], on_conflict="new") == 1
        assert reg.scalar("SELECT count(*) FROM verdicts") == 3


def test_a_failed_replace_keeps_the_stored_rows(registry_path):
    with Registry.open(registry_path) as reg:
        row = {"request_key": "k1", "rule": "strict", "rule_version": "1", "correct": True}
        reg.insert("verdicts", [row])
        try:  # the delete of k1's row runs, then the insert fails on a NULL `correct`: both are undone
            reg.insert("verdicts", [{**row, "correct": None}], on_conflict="replace")
            raise AssertionError("a verdict without `correct` was stored")
        except duckdb.ConstraintException:
            pass
        assert reg.query("SELECT request_key, correct FROM verdicts").rows() == [("k1", True)]
