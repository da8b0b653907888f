"""The DuckDB registry: every problem, teacher call, program execution, verdict, corpus, run and eval.

One file, opened by one writer at a time (DuckDB's own file lock; a second writer gets `RegistryLocked`).
Bulk writes go through Arrow, never row by row. DuckDB never reaches the network: extension auto-install and
auto-load are off on every connection. While a writer holds the file, readers (`sql`, `info`, exports) get their
queries answered by the writer itself, as of its last commit (`registry.serve`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import duckdb

from mixdistill import settings
from mixdistill.errors import RegistryError, RegistryLocked
from mixdistill.registry.keys import KEYS, LATEST
from mixdistill.registry.migrations import MIGRATIONS
from mixdistill.registry.serve import RemoteConnection, Server
from mixdistill.registry.serve import connect as connect_to_writer
from mixdistill.workspace import arrow_stream

if TYPE_CHECKING:  # polars and pyarrow load on first use: `mixdistill info` needs neither
    import polars as pl
    import pyarrow as pa

SCHEMA_VERSION = len(MIGRATIONS)
log = logging.getLogger(__name__)
SERVE_WAIT_S = 5.0  # a writer that has just taken the file starts serving readers a moment later
_PID = re.compile(r"\(PID (\d+)\)")
# Every connection: no extension is ever downloaded or loaded behind the user's back (an SQLite file opened as the
# registry used to make DuckDB fetch the sqlite extension from the internet).
NO_NETWORK = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
# `mixdistill sql`, and every writer (whose database also answers other processes' reads): no file outside the
# registry can be read or written, and no query can turn that back on.
CONFINED = {**NO_NETWORK, "enable_external_access": False, "lock_configuration": True}


class Registry:
    """A connection to one registry file. Use `Registry.open(path)` as a context manager."""

    def __init__(self, con: "duckdb.DuckDBPyConnection | RemoteConnection", path: Path, read_only: bool):
        self.con = con
        self.path = path
        self.read_only = read_only
        # A DuckDB connection refuses a second call while one runs. Writers that hand `insert` to a worker thread
        # (the generation engine does, to keep its event loop free) are serialised here rather than failing.
        self.lock = threading.RLock()
        self._in_transaction = False
        self.server: Server | None = None

    @property
    def writer_pid(self) -> int | None:
        """The process writing this registry, when this reader's queries are answered by it (else None)."""
        return self.con.writer_pid if isinstance(self.con, RemoteConnection) else None

    # ---------------------------------------------------------------- opening
    @classmethod
    @contextmanager
    def open(cls, path: str | Path, *, read_only: bool = False, confined: bool = False, attach: bool = False,
             serve: bool = True) -> Iterator["Registry"]:
        """Open for writing (creates and migrates the file; answers other processes' reads unless `serve` is off),
        or read-only (a file locked by a writer is read through that writer, as of its last commit).

        A writer's connection has no file access outside the registry, except with `attach` (`registry merge`
        attaches shard files), and then it serves no reader. `confined` does the same for a reader (`sql`)."""
        path = Path(path)
        if path.exists() and not path.is_file():
            raise RegistryError(f"registry {path} is a folder, not a file; give a file path with --registry")
        if read_only and not path.exists():
            raise RegistryError(f"no registry at {path} (import problems or run a build first)")
        if not read_only:
            _make_parent(path)
        confine = (confined if read_only else not attach)
        new = not path.exists()
        con = _connect(path, read_only, CONFINED if confine else NO_NETWORK)
        reg = cls(con, path, read_only)
        log.info("registry %s opened %s", path, "read-only" if read_only else "for writing")
        try:
            reg._check_and_migrate(new)
            if not read_only:
                from mixdistill.registry.runs import close_stale_runs

                if not new:  # a new file has no runs
                    close_stale_runs(reg)
                if serve and confine:
                    reg.server = Server(reg)
            yield reg
        finally:
            if reg.server is not None:
                reg.server.close()
            con.close()

    def _check_and_migrate(self, new: bool) -> None:
        """A file this process has just created holds nothing to check (the catalog query costs 12 ms)."""
        try:
            tables = set() if new else {
                r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        except duckdb.Error as e:
            raise RegistryError(f"{self.path} cannot be read as a registry: {str(e).splitlines()[0]}") from None
        if "schema_migrations" not in tables:
            if tables:
                raise RegistryError(f"{self.path} is a DuckDB file but not a mixdistill registry (no schema_migrations)")
            if self.read_only:
                raise RegistryError(f"{self.path} is an empty DuckDB file, not a mixdistill registry")
            self.con.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMP DEFAULT current_timestamp)"
            )
        try:
            current = self.schema_version()
            names = dict(self.con.execute("SELECT version, name FROM schema_migrations").fetchall())
        except duckdb.Error as e:
            raise RegistryError(f"{self.path} is not a mixdistill registry (its schema_migrations table: "
                                f"{str(e).splitlines()[0]})") from None
        ours = {i + 1: fn.__name__ for i, fn in enumerate(MIGRATIONS)}
        foreign = [v for v, name in names.items() if v in ours and ours[v] != name]
        if foreign:
            raise RegistryError(f"{self.path} is not a mixdistill registry (its schema_migrations records "
                                f"{names[foreign[0]]!r} as version {foreign[0]}, not {ours[foreign[0]]!r})")
        if current > SCHEMA_VERSION:
            raise RegistryError(
                f"{self.path} has schema version {current}, newer than this mixdistill understands "
                f"({SCHEMA_VERSION}); upgrade mixdistill to open it"
            )
        if current < SCHEMA_VERSION and self.read_only:
            raise RegistryError(
                f"{self.path} has schema version {current} < {SCHEMA_VERSION}; open it once for writing to migrate"
            )
        if current == 0 and MIGRATIONS:  # a new registry: its whole schema in one commit (a commit costs ~5 ms)
            with self.transaction():
                for version, fn in enumerate(MIGRATIONS, start=1):
                    self._migrate(version, fn)
            return
        for version, fn in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction():
                self._migrate(version, fn)

    def _migrate(self, version: int, fn) -> None:
        log.info("registry %s: migration %d (%s)", self.path, version, fn.__name__)
        fn(self.con)
        self.con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, fn.__name__])

    # ---------------------------------------------------------------- basics
    def schema_version(self) -> int:
        return self.scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: on any error nothing written inside the block stays. Inside another, it is part of it."""
        with self.lock:
            if self._in_transaction:
                yield
                return
            self.con.execute("BEGIN TRANSACTION")
            self._in_transaction = True
            try:
                yield
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            else:
                self.con.execute("COMMIT")
            finally:
                self._in_transaction = False

    def execute(self, sql: str, params: Sequence | dict | None = None) -> list[tuple]:
        """One statement under the registry's lock; its rows (a write is committed at once)."""
        with self.lock:
            return self.con.execute(sql, params).fetchall()

    def _out_of_memory(self, table: str) -> RegistryError:
        """A write DuckDB cannot do within the registry's memory limit (the tables that grow with the corpus have no
        key index since m008, so this is not expected from their size alone)."""
        return RegistryError(
            f"registry {self.path}: writing to {table} needs more memory than the registry's limit "
            f"({settings.db_memory()}); {settings.db_memory_advice()}"
        )

    def query(self, sql: str, params: Sequence | dict | None = None) -> pl.DataFrame:
        import polars as pl

        with self.lock:
            rel = self.con.sql(sql, params=params)
            return pl.DataFrame() if rel is None else rel.pl()

    def scalar(self, sql: str, params: Sequence | dict | None = None):
        with self.lock:
            rows = self.con.execute(sql, params).fetchall()  # fetchall: DuckDB 2 keeps a half-read result open
        return rows[0][0] if rows else None

    def insert(
        self, table: str, rows: pl.DataFrame | pa.Table | list[dict], *, on_conflict: str = "nothing",
        supersedes: bool = True,
    ) -> int:
        """Bulk insert by column name through Arrow; returns the number of new rows.

        `on_conflict="nothing"` keeps what is stored (the cache semantics: never overwrite a paid answer);
        `"replace"` overwrites rows with the same key (e.g. re-verification); `"error"` raises
        `duckdb.ConstraintException` on a stored key (and stores nothing); `"new"` appends the rows as they are, for a
        writer that knows none of their keys is stored. A table of `registry.keys.KEYS` has no index: each of the
        first three looks its rows' keys up with one scan of the stored keys (about 1 s at 10^7 rows), so large
        writers insert a chunk of rows at a time, and the frequent small commits of a generation run use `"new"`.
        Within one call, a key repeated keeps its first row (as DuckDB's own conflict handling does).

        Into a table with a `latest` flag (`registry.keys.LATEST`), the flags of the rows' generations are refreshed
        after the insert, another scan of the table, unless the writer knows that no stored row of theirs can be
        superseded (`supersedes=False`: the new rows are then the latest, as inserted).
        """
        import polars as pl

        if isinstance(rows, list):
            if not rows:
                return 0
            rows = pl.DataFrame(rows, infer_schema_length=None)
        if (rows.height if isinstance(rows, pl.DataFrame) else rows.num_rows) == 0:
            return 0
        key = KEYS.get(table)
        if key is not None:
            frame = rows if isinstance(rows, pl.DataFrame) else pl.from_arrow(rows)
            rows = frame.unique(list(key), keep="first", maintain_order=True)
        arrow = arrow_stream(rows) if isinstance(rows, pl.DataFrame) else rows
        incoming = "_mixdistill_incoming"
        with self.lock:
            self.con.register(incoming, arrow)
            failed = True
            try:
                if key is None:
                    verb, tail = {"nothing": ("INSERT", "ON CONFLICT DO NOTHING"), "replace": ("INSERT OR REPLACE", ""),
                                  "error": ("INSERT", ""), "new": ("INSERT", "")}[on_conflict]
                    n = self.con.execute(f"{verb} INTO {table} BY NAME SELECT * FROM {incoming} {tail}").fetchall()[0][0]
                else:
                    n = self._insert_keyed(table, key, incoming, on_conflict)
                    if supersedes and table in LATEST:
                        self.refresh_latest(table, where=f"request_key IN (SELECT request_key FROM {incoming})")
                failed = False
            except duckdb.OutOfMemoryException:
                raise self._out_of_memory(table) from None
            finally:
                try:
                    self.con.unregister(incoming)
                except duckdb.Error:
                    if not failed:
                        raise  # after a failed insert (an aborted transaction...) the insert's error is the one
        return n

    def append(self, table: str, stream: "pa.RecordBatchReader") -> int:
        """Append every row of an Arrow stream in one statement, for a writer that knows none of their keys is stored
        (a new corpus version's rows); returns their number. One statement, not an `insert` per chunk: inside a
        transaction DuckDB holds the appends of many statements in memory beyond its limit (5M corpus rows in
        50k-row inserts: 2.2 GB peak RSS, in one statement 1.0 GB)."""
        incoming = "_mixdistill_stream"
        with self.lock:
            self.con.register(incoming, stream)
            failed = True
            try:
                n = self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {incoming}").fetchall()[0][0]
                failed = False
                return n
            except duckdb.OutOfMemoryException:
                raise self._out_of_memory(table) from None
            finally:
                try:
                    self.con.unregister(incoming)
                except duckdb.Error:
                    if not failed:
                        raise  # as in `insert`: after a failed insert, the insert's error is the one

    def refresh_latest(self, table: str, where: str = "") -> None:
        """Set the `latest` flag (`registry.keys.LATEST`) of the rows matching `where` (a condition on `request_key`
        that takes whole generations; every row when empty). Writers call it after adding rows that may supersede
        stored ones; it costs a scan of the table."""
        partition, order = LATEST[table]
        with self.lock:
            self.con.execute(
                f"UPDATE {table} SET latest = x.first FROM ("
                f"  SELECT rowid AS rid, row_number() OVER (PARTITION BY {partition} ORDER BY {order}) = 1 AS first"
                f"  FROM {table} {f'WHERE {where}' if where else ''}"
                f") x WHERE {table}.rowid = x.rid AND {table}.latest IS DISTINCT FROM x.first"
            )

    def _insert_keyed(self, table: str, key: tuple[str, ...], incoming: str, on_conflict: str) -> int:
        on = " AND ".join(f's."{k}" = i."{k}"' for k in key)
        stored = f"EXISTS (SELECT 1 FROM {table} s WHERE {on})"
        append = f"INSERT INTO {table} BY NAME SELECT * FROM {incoming} i"
        if on_conflict == "new":
            return self.con.execute(append).fetchall()[0][0]
        if on_conflict == "nothing":
            return self.con.execute(f"{append} WHERE NOT {stored}").fetchall()[0][0]
        if on_conflict == "error":
            clash = self.con.execute(f"SELECT {', '.join(f'i.{k}' for k in key)} FROM {incoming} i WHERE {stored} "
                                     "LIMIT 1").fetchall()  # fetchall: DuckDB 2 keeps a half-read result open
            if clash:
                raise duckdb.ConstraintException(f"{table}: key {clash[0]!r} is already stored")
            return self.con.execute(append).fetchall()[0][0]
        if on_conflict != "replace":
            raise ValueError(f"on_conflict={on_conflict!r}")
        with self.transaction():  # the stored rows of these keys go, the new ones come, in one commit
            self.con.execute(f"DELETE FROM {table} s WHERE EXISTS (SELECT 1 FROM {incoming} i WHERE {on})")
            return self.con.execute(append).fetchall()[0][0]

    def table_counts(self) -> dict[str, int]:
        names = [
            r[0]
            for r in self.con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
                " AND table_name <> 'schema_migrations' ORDER BY table_name"
            ).fetchall()
        ]
        return {n: self.scalar(f'SELECT count(*) FROM "{n}"') for n in names}

    def run_statuses(self) -> list[tuple[str, int]]:
        """(status, runs) pairs; a `running` run whose process is gone counts as `interrupted` (see `runs`)."""
        from mixdistill.registry.runs import status_counts

        return status_counts(self)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise RegistryError(f"cannot create registry {path}: {blocker} is a file, not a folder") from None
    except PermissionError:
        raise RegistryError(f"cannot create registry {path}: permission denied") from None


def _connect(path: Path, read_only: bool, config: dict) -> "duckdb.DuckDBPyConnection | RemoteConnection":
    """A connection to the registry, or (read-only, while a writer holds it) one through that writer."""
    deadline = time.monotonic() + SERVE_WAIT_S
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config={**config, "memory_limit": settings.db_memory()})
        except duckdb.IOException as e:
            msg = str(e)
            if "lock" not in msg.lower():
                if "not a valid DuckDB database" in msg:
                    raise RegistryError(f"{path} is not a valid DuckDB registry file (corrupted or another format)") from None
                raise RegistryError(f"cannot open registry {path}: {msg.splitlines()[0]}") from None
            pid = _PID.search(msg)
            if read_only:
                remote = connect_to_writer(path, int(pid.group(1)) if pid else None)
                if remote is not None:
                    return remote
            if not read_only or time.monotonic() > deadline:  # a writer that has just started serves soon
                holder = f" (process {pid.group(1)})" if pid else ""
                raise RegistryLocked(
                    f"registry {path} is locked by another build{holder}; wait for it to finish or use another "
                    "--registry"
                ) from None
            time.sleep(0.05)
        except duckdb.Error as e:
            raise RegistryError(f"cannot open registry {path}: {str(e).splitlines()[0]}") from None
