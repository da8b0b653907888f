"""A private DuckDB database for one build's mixing and export (and for sets of ids too large for Python): rows go
in and come out in bounded chunks.

Mixing and export work on every correct rationale of a corpus (10^7 at scale). Held as Python lists or eager frames
they cost gigabytes; in DuckDB they stay under its memory limit (`settings.db_memory()`) and spill to a temporary
folder beyond it. The workspace is in memory, separate from the registry: it works the same for a registry opened
for writing, read-only, or read through another process's writer, and what it holds is gone when it closes. It gets
half the registry's limit (`WORKSPACE_SHARE`): the two pools together stay within 1.5 times `$MIXDISTILL_DB_MEMORY`
whatever the corpus size. Per-row Python work (program extraction, normalisation for dedup) runs on `CHUNK_ROWS` rows
at a time.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import duckdb

from mixdistill import settings

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

CHUNK_ROWS = 50_000  # rows per chunk of Python work (tests shrink it)
IDS_MEMORY = "64MB"  # a workspace that holds only ids (a task file's, a plan's earlier splits'): beyond it, they spill
WORKSPACE_SHARE = 0.5  # of the registry connection's memory limit
SORT_SHARE = 0.125  # of the workspace's limit: the most row bytes `create_ordered` sorts at once (tests shrink it)
_UNITS = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def memory_limit() -> str:
    """The workspace's DuckDB memory limit: `WORKSPACE_SHARE` of `settings.db_memory()`, in bytes."""
    return f"{int(_bytes(settings.db_memory()) * WORKSPACE_SHARE)}B"


def _bytes(limit: str) -> int:
    """A DuckDB memory limit (`1GB`, `512MiB`, `300000B`) in bytes."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]i?)?b", limit.lower()).groups()
    return int(float(number) * (_UNITS[unit] if unit else 1))


def arrow_stream(frame: "pl.DataFrame") -> "_ArrowStream":
    """`frame` for `con.register`, scanned by DuckDB through the Arrow C stream interface: registering the frame
    itself (or its `to_arrow()`) imports pyarrow and numpy, 0.2-0.3 s of a short command's start."""
    import polars as pl

    nulls = [name for name, dtype in frame.schema.items() if dtype == pl.Null]  # DuckDB cannot scan polars' Null
    return _ArrowStream(frame.with_columns(pl.col(nulls).cast(pl.String)) if nulls else frame)


@contextmanager
def registered(con, name: str, rows) -> Iterator[None]:
    """`rows` (a polars frame, through `arrow_stream`, or an Arrow table) visible to `con`'s queries as `name` for
    the block."""
    import polars as pl

    con.register(name, arrow_stream(rows) if isinstance(rows, pl.DataFrame) else rows)
    try:
        yield
    finally:
        con.unregister(name)


class _ArrowStream:
    """A frame seen only through `__arrow_c_stream__` (DuckDB asks pyarrow to convert a polars frame otherwise)."""

    def __init__(self, frame: "pl.DataFrame"):
        self.frame = frame

    def __arrow_c_stream__(self, requested_schema=None):
        return self.frame.__arrow_c_stream__(requested_schema)


class Workspace:
    """An in-memory DuckDB connection with a spill folder of its own; a context manager (also closed when collected).
    `memory` is its DuckDB memory limit (default `memory_limit()`)."""

    def __init__(self, memory: str | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mixdistill-mix-")
        self.memory = memory or memory_limit()
        self.con = duckdb.connect(":memory:", config={
            "memory_limit": self.memory, "temp_directory": self._tmp.name,
            "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        })

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()
        self._tmp.cleanup()

    def execute(self, sql: str, params: Sequence | dict | None = None) -> list[tuple]:
        return self.con.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence | dict | None = None):
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def query(self, sql: str, params: Sequence | dict | None = None) -> "pl.DataFrame":
        import polars as pl

        return pl.from_arrow(self.con.sql(sql, params=params).to_arrow_table())

    def append(self, table: str, rows: "pa.Table | pl.DataFrame") -> None:
        """Add rows to `table` (created from the first chunk's columns)."""
        with registered(self.con, "_incoming", rows):
            exists = self.scalar("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table])
            if exists:
                self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")
            else:
                self.con.execute(f"CREATE TABLE {table} AS SELECT * FROM _incoming")

    def found(self, table: str, ids: list[str], where: str = "true") -> set[str]:
        """Those of `ids` that are in the `id` column of `table` (rows matching `where`): one join."""
        import polars as pl

        with registered(self.con, "_ids", pl.DataFrame({"id": ids}, schema={"id": pl.String})):
            return {i for (i,) in self.execute(f"SELECT id FROM _ids WHERE id IN (SELECT id FROM {table} WHERE {where})")}

    def create_ordered(self, table: str, source: str, order: str, select: str = "s.*", narrow: str = "",
                       join: str = "") -> None:
        """`CREATE TABLE table AS SELECT {select}, _pos FROM {source} s ORDER BY {order}`, `_pos` numbering that order
        from 1, stored in it (a scan without ORDER BY reads the rows in `_pos` order: DuckDB keeps insertion order).

        DuckDB's sort of rows whose texts are far larger than its memory limit runs out of memory instead of
        spilling (a window's sort as well), while a sort of narrow keys spills. So only the keys are sorted: a narrow
        table `o` (`_pos` and the `narrow` columns, which may read tables of `join`) is numbered and put back in the
        source's row order; when the rows are more than `SORT_SHARE` of the limit, they are written once, each beside
        its `o` row, to Parquet partitions of contiguous positions in the spill folder, each then sorted alone and
        appended in order. `select` reads `s` (the source table, scanned in its row order) and `o`."""
        extra = f", {narrow}" if narrow else ""
        # in the source's row order, so that its rows meet theirs by position: no hash table of wide rows is built
        self.execute(f"CREATE TEMP TABLE _order AS SELECT * FROM (SELECT s.rowid AS _rid, row_number() OVER "
                     f"(ORDER BY {order}) AS _pos{extra} FROM {source} s {join}) ORDER BY _rid")
        try:
            n = self.scalar("SELECT count(*) FROM _order")
            per_part = max(1, int(_bytes(self.memory) * SORT_SHARE // max(1, self._row_bytes(source))))
            rows = f"FROM {source} s POSITIONAL JOIN _order o"
            if n <= per_part:
                self.execute(f"CREATE TABLE {table} AS SELECT {select}, o._pos {rows} ORDER BY o._pos")
                return
            folder = Path(self._tmp.name) / f"{table}-parts"
            # each thread holds up to this many rows of every partition before writing them (default 524,288)
            self.execute(f"SET partitioned_write_flush_threshold = {per_part}")
            try:
                self.execute(f"COPY (SELECT {select}, o._pos, (o._pos - 1) // {per_part} AS _part {rows}) "
                             f"TO '{folder}' (FORMAT parquet, PARTITION_BY (_part))")
            finally:
                self.execute("RESET partitioned_write_flush_threshold")
            for part in range(-(-n // per_part)):
                files = f"read_parquet('{folder}/_part={part}/*.parquet', hive_partitioning = false)"
                verb = f"CREATE TABLE {table} AS" if part == 0 else f"INSERT INTO {table}"
                self.execute(f"{verb} SELECT * FROM {files} ORDER BY _pos")
                shutil.rmtree(folder / f"_part={part}")
        finally:
            self.execute("DROP TABLE _order")

    def _row_bytes(self, table: str) -> float:
        """About how many bytes a row of `table` holds, from a sample (its texts, 8 per other column)."""
        columns = self.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?", [table])
        texts = [f'coalesce(strlen("{c}"), 0)' for c, kind in columns if kind == "VARCHAR"]
        width = self.scalar(f"SELECT avg({' + '.join(texts) or '0'}) FROM {table} USING SAMPLE 4096 ROWS")
        return (width or 0) + 8 * len(columns)

    def stream(self, sql: str, params: Sequence | dict | None = None, rows: int | None = None) -> "pa.RecordBatchReader":
        """The result of `sql` as an Arrow stream of batches of up to `rows` rows (default `CHUNK_ROWS`), to be read
        by another connection's scan or cut by `batches`."""
        return self.con.sql(sql, params=params).to_arrow_reader(rows or CHUNK_ROWS)

    def batches(self, sql: str, params: Sequence | dict | None = None, rows: int | None = None) -> Iterator["pa.Table"]:
        """The result of `sql` as tables of exactly `rows` rows (default `CHUNK_ROWS`; the last one smaller)."""
        reader = self.stream(sql, params, rows)
        yield from exact_chunks(reader, reader.schema, rows)


def exact_chunks(batches, schema: "pa.Schema", rows: int | None = None) -> Iterator["pa.Table"]:
    """Arrow record batches of any size -> contiguous tables of exactly `rows` rows (the last one smaller; one empty
    table for no rows at all), so that a Parquet row group or a Python chunk never depends on how DuckDB happened
    to cut its batches."""
    import pyarrow as pa

    rows = rows or CHUNK_ROWS
    pending: list = []
    held, given = 0, False
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, rows).combine_chunks()
            given = True
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held or not given:
        yield pa.Table.from_batches(pending, schema).combine_chunks()


def registry_batches(con, sql: str, params: Sequence | dict | None = None, rows: int | None = None) -> Iterator["pa.Table"]:
    """A registry query's rows in chunks: streamed from a local DuckDB connection; a query answered by another
    process's writer (`registry.serve`) arrives whole and is cut here."""
    rel = con.sql(sql, params=params)
    if hasattr(rel, "to_arrow_reader"):
        reader = rel.to_arrow_reader(rows or CHUNK_ROWS)
        yield from exact_chunks(reader, reader.schema, rows)
    else:
        table = rel.to_arrow_table()
        yield from exact_chunks(table.to_batches(), table.schema, rows)
