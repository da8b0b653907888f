"""Registries as an older mixdistill left them, for migration tests."""

from __future__ import annotations

import duckdb

from mixdistill.registry.migrations import MIGRATIONS


def registry_at_version(path, version: int) -> duckdb.DuckDBPyConnection:
    """A connection to a new registry file migrated up to `version` only (the migration log as `Registry` keeps it)."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMP DEFAULT current_timestamp)")
    for number, fn in enumerate(MIGRATIONS[:version], start=1):
        fn(con)
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [number, fn.__name__])
    return con
