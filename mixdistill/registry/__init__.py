"""The DuckDB registry: every problem, teacher call, program execution, verdict, corpus, run and eval.

One file, opened by one writer at a time (DuckDB's own file lock; a second writer gets `RegistryLocked`).
Bulk writes go through Arrow, never row by row.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import polars as pl
import pyarrow as pa

from mixdistill.errors import RegistryError, RegistryLocked
from mixdistill.registry.migrations import MIGRATIONS

SCHEMA_VERSION = len(MIGRATIONS)
_PID = re.compile(r"\(PID (\d+)\)")


class Registry:
    """A connection to one registry file. Use `Registry.open(path)` as a context manager."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool):
        self.con = con
        self.path = path
        self.read_only = read_only
        # A DuckDB connection refuses a second call while one runs. Writers that hand `insert` to a worker thread
        # (the generation engine does, to keep its event loop free) are serialised here rather than failing.
        self.lock = threading.RLock()

    # ---------------------------------------------------------------- opening
    @classmethod
    @contextmanager
    def open(cls, path: str | Path, *, read_only: bool = False) -> Iterator["Registry"]:
        path = Path(path)
        if read_only and not path.exists():
            raise RegistryError(f"no registry at {path} (import problems or run a build first)")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        con = _connect(path, read_only)
        try:
            reg = cls(con, path, read_only)
            reg._check_and_migrate()
            yield reg
        finally:
            con.close()

    def _check_and_migrate(self) -> None:
        tables = {r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "schema_migrations" not in tables:
            if tables:
                raise RegistryError(f"{self.path} is a DuckDB file but not a mixdistill registry (no schema_migrations)")
            if self.read_only:
                raise RegistryError(f"{self.path} is an empty DuckDB file, not a mixdistill registry")
            self.con.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMP DEFAULT current_timestamp)"
            )
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise RegistryError(
                f"{self.path} has schema version {current}, newer than this mixdistill understands "
                f"({SCHEMA_VERSION}); upgrade mixdistill to open it"
            )
        if current < SCHEMA_VERSION and self.read_only:
            raise RegistryError(
                f"{self.path} has schema version {current} < {SCHEMA_VERSION}; open it once for writing to migrate"
            )
        for version, fn in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction():
                fn(self.con)
                self.con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, fn.__name__])

    # ---------------------------------------------------------------- basics
    def schema_version(self) -> int:
        return self.scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: on any error nothing written inside the block stays."""
        with self.lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")

    def query(self, sql: str, params: Sequence | dict | None = None) -> pl.DataFrame:
        with self.lock:
            rel = self.con.sql(sql, params=params)
            return pl.DataFrame() if rel is None else rel.pl()

    def scalar(self, sql: str, params: Sequence | dict | None = None):
        with self.lock:
            rows = self.con.execute(sql, params).fetchall()  # fetchall: DuckDB 2 keeps a half-read result open
        return rows[0][0] if rows else None

    def insert(
        self, table: str, rows: pl.DataFrame | pa.Table | list[dict], *, on_conflict: str = "nothing"
    ) -> int:
        """Bulk insert by column name through Arrow; returns the number of new rows.

        `on_conflict="nothing"` keeps what is stored (the cache semantics: never overwrite a paid answer);
        `"replace"` overwrites rows with the same primary key (e.g. re-verification).
        """
        if isinstance(rows, list):
            if not rows:
                return 0
            rows = pl.DataFrame(rows, infer_schema_length=None)
        arrow = rows.to_arrow() if isinstance(rows, pl.DataFrame) else rows
        if arrow.num_rows == 0:
            return 0
        verb, tail = {"nothing": ("INSERT", "ON CONFLICT DO NOTHING"), "replace": ("INSERT OR REPLACE", "")}[on_conflict]
        with self.lock:
            self.con.register("_mixdistill_incoming", arrow)
            try:
                sql = f"{verb} INTO {table} BY NAME SELECT * FROM _mixdistill_incoming {tail}"
                return self.con.execute(sql).fetchall()[0][0]
            finally:
                self.con.unregister("_mixdistill_incoming")

    def table_counts(self) -> dict[str, int]:
        names = [
            r[0]
            for r in self.con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
                " AND table_name <> 'schema_migrations' ORDER BY table_name"
            ).fetchall()
        ]
        return {n: self.scalar(f'SELECT count(*) FROM "{n}"') for n in names}


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as e:
        msg = str(e)
        if "lock" in msg.lower():
            pid = _PID.search(msg)
            holder = f" (process {pid.group(1)})" if pid else ""
            raise RegistryLocked(
                f"registry {path} is locked by another build{holder}; wait for it to finish or use another --registry"
            ) from None
        if "not a valid DuckDB database" in msg:
            raise RegistryError(f"{path} is not a valid DuckDB registry file (corrupted or another format)") from None
        raise RegistryError(f"cannot open registry {path}: {msg.splitlines()[0]}") from None
    except duckdb.Error as e:
        raise RegistryError(f"cannot open registry {path}: {str(e).splitlines()[0]}") from None
