"""The DuckDB registry: every problem, teacher call, program execution, verdict, corpus, run and eval.

One file, opened by one writer at a time (DuckDB's own file lock; a second writer gets `RegistryLocked`).
Bulk writes go through Arrow, never row by row. DuckDB never reaches the network: extension auto-install and
auto-load are off on every connection. While a writer holds the file, it publishes a read-only snapshot after its
commits (`registry.snapshot`), and readers (`sql`, `info`) open that instead of waiting.
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

from mixdistill.errors import RegistryError, RegistryLocked
from mixdistill.registry.migrations import MIGRATIONS
from mixdistill.registry.snapshot import Snapshots, ask_for_snapshot, snapshot_path

if TYPE_CHECKING:  # polars and pyarrow load on first use: `mixdistill info` needs neither
    import polars as pl
    import pyarrow as pa

SCHEMA_VERSION = len(MIGRATIONS)
log = logging.getLogger(__name__)
SNAPSHOT_WAIT_S = 5.0  # a writer publishes its first snapshot when asked (0.5 s after opening at the soonest), plus one copy
FIRST_COPY_WAIT_S = 60.0  # ... or, while that copy is being written, up to this long
_PID = re.compile(r"\(PID (\d+)\)")
# Every connection: no extension is ever downloaded or loaded behind the user's back (an SQLite file opened as the
# registry used to make DuckDB fetch the sqlite extension from the internet).
NO_NETWORK = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
# `mixdistill sql`: no file outside the registry can be read or written, and the query cannot turn that back on.
CONFINED = {**NO_NETWORK, "enable_external_access": False, "lock_configuration": True}


class Registry:
    """A connection to one registry file. Use `Registry.open(path)` as a context manager."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool):
        self.con = con
        self.path = path
        self.read_only = read_only
        # A DuckDB connection refuses a second call while one runs. Writers that hand `insert` to a worker thread
        # (the generation engine does, to keep its event loop free) are serialised here rather than failing.
        self.lock = threading.RLock()
        self._depth = 0  # open transactions; a snapshot is published only between them
        self.snapshots: Snapshots | None = None

    # ---------------------------------------------------------------- opening
    @classmethod
    @contextmanager
    def open(cls, path: str | Path, *, read_only: bool = False, confined: bool = False,
             snapshots: bool = True) -> Iterator["Registry"]:
        """Open for writing (creates and migrates the file; publishes snapshots for readers unless `snapshots` is
        off), or read-only (a file locked by a writer is read through the writer's latest snapshot). `confined`: no
        file access outside the registry."""
        path = Path(path)
        if path.exists() and not path.is_file():
            raise RegistryError(f"registry {path} is a folder, not a file; give a file path with --registry")
        if read_only and not path.exists():
            raise RegistryError(f"no registry at {path} (import problems or run a build first)")
        if not read_only:
            _make_parent(path)
        con, opened = _connect(path, read_only, CONFINED if confined else NO_NETWORK)
        reg = cls(con, opened, read_only)
        log.info("registry %s opened %s", opened, "read-only" if read_only else "for writing")
        try:
            reg._check_and_migrate()
            if not read_only:
                from mixdistill.registry.runs import close_stale_runs

                close_stale_runs(reg)
                if snapshots:
                    reg.snapshots = Snapshots(reg)
            yield reg
        finally:
            if reg.snapshots is not None:
                reg.snapshots.close()
            con.close()

    def snapshot_age_s(self) -> float:
        """Seconds since the snapshot being read was published (0 for the registry itself)."""
        if not self.path.name.endswith(".snapshot"):
            return 0.0
        return max(0.0, time.time() - self.scalar("SELECT getvariable('mixdistill_snapshot_published')"))

    def _check_and_migrate(self) -> None:
        try:
            tables = {r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
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
        for version, fn in enumerate(MIGRATIONS[current:], start=current + 1):
            log.info("registry %s: migration %d (%s)", self.path, version, fn.__name__)
            with self.transaction():
                fn(self.con)
                self.con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, fn.__name__])

    def committed(self) -> None:
        """Called after each commit: lets readers see it (through the snapshot) within about a second."""
        if self.snapshots is not None and self._depth == 0:
            self.snapshots.changed()

    # ---------------------------------------------------------------- basics
    def schema_version(self) -> int:
        return self.scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: on any error nothing written inside the block stays."""
        with self.lock:
            self.con.execute("BEGIN TRANSACTION")
            self._depth += 1
            try:
                yield
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            else:
                self.con.execute("COMMIT")
            finally:
                self._depth -= 1
        self.committed()

    def execute(self, sql: str, params: Sequence | dict | None = None) -> list[tuple]:
        """One statement under the registry's lock; its rows (a write is committed, and published, at once)."""
        with self.lock:
            rows = self.con.execute(sql, params).fetchall()
        self.committed()
        return rows

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
        self, table: str, rows: pl.DataFrame | pa.Table | list[dict], *, on_conflict: str = "nothing"
    ) -> int:
        """Bulk insert by column name through Arrow; returns the number of new rows.

        `on_conflict="nothing"` keeps what is stored (the cache semantics: never overwrite a paid answer);
        `"replace"` overwrites rows with the same primary key (e.g. re-verification); `"error"` is a plain INSERT that
        raises `duckdb.ConstraintException` on a stored key (and stores nothing): DuckDB's conflict handling costs a
        few milliseconds of CPU per statement, so a writer that rarely meets a stored key tries it first.
        """
        import polars as pl

        if isinstance(rows, list):
            if not rows:
                return 0
            rows = pl.DataFrame(rows, infer_schema_length=None)
        arrow = rows.to_arrow() if isinstance(rows, pl.DataFrame) else rows
        if arrow.num_rows == 0:
            return 0
        verb, tail = {"nothing": ("INSERT", "ON CONFLICT DO NOTHING"), "replace": ("INSERT OR REPLACE", ""),
                      "error": ("INSERT", "")}[on_conflict]
        with self.lock:
            self.con.register("_mixdistill_incoming", arrow)
            try:
                sql = f"{verb} INTO {table} BY NAME SELECT * FROM _mixdistill_incoming {tail}"
                n = self.con.execute(sql).fetchall()[0][0]
            finally:
                self.con.unregister("_mixdistill_incoming")
        self.committed()
        return n

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


def _connect(path: Path, read_only: bool, config: dict) -> tuple[duckdb.DuckDBPyConnection, Path]:
    """The connection and the file it reads: the registry, or (read-only, while a writer holds it) its snapshot."""
    started = time.monotonic()
    deadline, asked = started + SNAPSHOT_WAIT_S, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config), path
        except duckdb.IOException as e:
            msg = str(e)
            if "lock" not in msg.lower():
                if "not a valid DuckDB database" in msg:
                    raise RegistryError(f"{path} is not a valid DuckDB registry file (corrupted or another format)") from None
                raise RegistryError(f"cannot open registry {path}: {msg.splitlines()[0]}") from None
            if read_only:
                snap = _open_snapshot(path, config)
                if snap is not None:
                    return snap
                if not asked:  # the writer copies only once asked; the first copy is waited for
                    asked = ask_for_snapshot(path)
                if _copying(path):  # a large registry's first copy may take longer than SNAPSHOT_WAIT_S
                    deadline = min(max(deadline, time.monotonic() + SNAPSHOT_WAIT_S), started + FIRST_COPY_WAIT_S)
            if not read_only or time.monotonic() > deadline:  # a writer that has just started publishes soon
                pid = _PID.search(msg)
                holder = f" (process {pid.group(1)})" if pid else ""
                raise RegistryLocked(
                    f"registry {path} is locked by another build{holder}; wait for it to finish or use another "
                    "--registry"
                ) from None
            time.sleep(0.05)
        except duckdb.Error as e:
            raise RegistryError(f"cannot open registry {path}: {str(e).splitlines()[0]}") from None


def _copying(path: Path) -> bool:
    snap = snapshot_path(path)
    return snap.with_name(snap.name + ".tmp").exists()


def _open_snapshot(path: Path, config: dict) -> tuple[duckdb.DuckDBPyConnection, Path] | None:
    snap = snapshot_path(path)
    try:
        published = snap.stat().st_mtime
        con = duckdb.connect(str(snap), read_only=True, config=config)
    except (duckdb.Error, OSError):  # not published yet, or replaced while opening
        return None
    con.execute("SET VARIABLE mixdistill_snapshot_published = ?", [published])
    return con, snap
