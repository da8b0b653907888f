"""Reading a registry while a writer holds it: the writer answers readers' queries itself.

DuckDB locks a file opened for writing against every other process, readers included, and has no cross-process
reader mode; this module is the small piece of glue that fills the gap (no library does it). A writer listens on a
Unix socket private to its user and runs each reader's query on a cursor of its own database: an MVCC read, so the
reader sees the data as of the writer's last commit and the writer's inserts go on meanwhile. Rows travel back as
Arrow IPC; the reader wraps them in a small stand-in for a DuckDB connection (`RemoteConnection`), so the read paths
(`sql`, `info`, exports...) run unchanged.

What a reader can do through the writer is confined: the writer's connection has no file access and no extension
loading, its configuration is locked, only SELECT and EXPLAIN statements are served, and each runs in a
transaction that is rolled back.

Wire format, both ways: frames of a 4-byte big-endian length and a body. Request: one JSON frame `{"sql", "params"}`.
Reply: a JSON frame `{"ok": true}` then a frame of Arrow IPC stream bytes (DuckDB's column types in the schema's
metadata), or `{"ok": false, "error"}`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import duckdb

from mixdistill.errors import RegistryError

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from mixdistill.registry import Registry

log = logging.getLogger(__name__)
_FRAME = struct.Struct(">I")
MAX_REQUEST_BYTES = 1 << 20
SERVED = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)


class RemoteError(RegistryError):
    """The writer refused or failed a reader's query (its one-line reason)."""


def socket_path(registry: Path) -> Path:
    """Where the writer of `registry` listens: a folder private to this user (AF_UNIX paths are short, so not next
    to the registry), one socket per registry file."""
    key = hashlib.sha256(str(registry.resolve()).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"mixdistill-{os.getuid()}" / f"{key}.sock"


def _private_folder(folder: Path) -> bool:
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.stat()
    return st.st_uid == os.getuid() and st.st_mode & 0o077 == 0


# ---------------------------------------------------------------------------------------------------- the writer
class Server:
    """Serves read-only queries on `reg`'s database from daemon threads, until `close()`."""

    def __init__(self, reg: "Registry"):
        self.reg = reg
        self.path = socket_path(reg.path)
        self.served = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._live: dict[threading.Thread, tuple[socket.socket, duckdb.DuckDBPyConnection]] = {}
        self._live_lock = threading.Lock()
        try:  # serving readers is a convenience: whatever stops it, the writer goes on
            if not _private_folder(self.path.parent):
                log.warning("not serving readers: %s is not private to this user", self.path.parent)
                return
            self.path.unlink(missing_ok=True)  # left by a writer that was killed: we hold the registry's lock now
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            sock.listen(16)
        except (OSError, AttributeError) as e:  # AttributeError: no AF_UNIX on this platform
            log.warning("not serving readers of %s: %s", reg.path, e)
            return
        self._sock = sock
        threading.Thread(target=self._accept, name="registry-readers", daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), name="registry-reader", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        me = threading.current_thread()
        with conn:
            cur = self.reg.con.cursor()  # its own connection to the database: the writer's calls go on meanwhile
            with self._live_lock:
                self._live[me] = (conn, cur)
            try:
                while not self._stop.is_set() and (body := _recv(conn, MAX_REQUEST_BYTES)) is not None:
                    _send_reply(conn, cur, body)
                    self.served += 1
            except OSError:
                pass  # the reader went away, or `close()` cut it off
            finally:
                with self._live_lock:
                    self._live.pop(me, None)
                cur.close()

    def close(self) -> None:
        """Stop listening, cut off connected readers (a query in progress is interrupted) and wait for their threads,
        so that no cursor keeps the database open after the writer closes it."""
        self._stop.set()
        if self._sock is None:
            return
        self._sock.close()
        self.path.unlink(missing_ok=True)
        with self._live_lock:
            live = dict(self._live)
        for conn, cur in live.values():
            try:
                cur.interrupt()
                conn.shutdown(socket.SHUT_RDWR)
            except (OSError, duckdb.Error):
                pass
        for thread in live:
            thread.join(timeout=5)


def _send_reply(conn: socket.socket, cur: duckdb.DuckDBPyConnection, body: bytes) -> None:
    import pyarrow as pa

    try:
        request = json.loads(body)
        table = run_query(cur, request["sql"], request.get("params"))
    except (RemoteError, duckdb.Error, ValueError, KeyError, TypeError) as e:
        _send(conn, json.dumps({"ok": False, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}))
        return
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    _send(conn, json.dumps({"ok": True}))
    _send(conn, sink.getvalue().to_pybytes())


def run_query(cur: duckdb.DuckDBPyConnection, sql: str, params: Sequence | dict | None) -> "pa.Table":
    """One reader's statement on the writer's database, read-only whatever it says; INTERVAL columns as text."""
    if not isinstance(sql, str):
        raise RemoteError("the query must be text")
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        raise RemoteError("one statement at a time while another process writes the registry")
    if statements[0].type not in SERVED:
        kind = statements[0].type.name
        raise RemoteError(f"only SELECT and EXPLAIN are served while another process writes the registry ({kind} is not)")
    cur.execute("BEGIN TRANSACTION")
    try:
        rel = cur.sql(sql, params=params)
        if rel is None:
            raise RemoteError("the statement returned no rows")
        rel = intervals_as_text(rel)
        types = [str(t) for t in rel.types]
        table = rel.to_arrow_table()
    finally:
        cur.execute("ROLLBACK")
    return table.replace_schema_metadata({"mixdistill_types": json.dumps(types)})


def intervals_as_text(rel):
    """`rel` with its INTERVAL columns as DuckDB's text for them: Arrow readers such as polars cannot import them."""
    types = [str(t) for t in rel.types]
    if not any(t.startswith("INTERVAL") for t in types):
        return rel
    return rel.project(", ".join(
        f'CAST("{c}" AS VARCHAR) AS "{c}"' if t.startswith("INTERVAL") else f'"{c}"' for c, t in zip(rel.columns, types)
    ))


# ---------------------------------------------------------------------------------------------------- the reader
class RemoteResult:
    """The rows of one served query, with the parts of DuckDB's result and relation APIs the read paths use."""

    def __init__(self, table: "pa.Table", types: list[str]):
        self.table = table
        self.columns = table.column_names
        self.types = types

    def fetchall(self) -> list[tuple]:
        return list(zip(*(col.to_pylist() for col in self.table.columns))) if self.table.num_columns else []

    def fetchone(self) -> tuple | None:
        rows = self.table.slice(0, 1)
        return next(iter(RemoteResult(rows, self.types).fetchall()), None)

    def pl(self) -> "pl.DataFrame":
        import polars as pl

        return pl.from_arrow(self.table) if self.table.num_columns else pl.DataFrame()

    def to_arrow_table(self) -> "pa.Table":
        return self.table


class RemoteConnection:
    """Stands in for a read-only DuckDB connection to a registry that another process is writing."""

    def __init__(self, path: Path, writer_pid: int | None):
        self.writer_pid = writer_pid
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(path))

    def execute(self, sql: str, params: Sequence | dict | None = None) -> RemoteResult:
        import pyarrow as pa

        gone = RemoteError("the writing process went away; run the query again")
        try:
            _send(self._sock, json.dumps({"sql": sql, "params": params}, default=str))
            head = _recv(self._sock, MAX_REQUEST_BYTES)
            reply = json.loads(head) if head is not None else None
            if reply is not None and not reply.get("ok"):
                raise RemoteError(reply.get("error") or "the query failed")
            body = _recv(self._sock, None) if reply is not None else None
        except OSError:
            raise gone from None
        if body is None:
            raise gone
        table = pa.ipc.open_stream(body).read_all()
        return RemoteResult(table, json.loads((table.schema.metadata or {}).get(b"mixdistill_types", b"[]")))

    sql = execute

    def close(self) -> None:
        self._sock.close()


def connect(registry: Path, writer_pid: int | None) -> RemoteConnection | None:
    """A connection through the writer of `registry`, or None if it does not serve readers (yet)."""
    path = socket_path(registry)
    try:
        return RemoteConnection(path, writer_pid)
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------- framing
def _send(sock: socket.socket, body: str | bytes) -> None:
    data = body.encode() if isinstance(body, str) else body
    sock.sendall(_FRAME.pack(len(data)) + data)


def _recv(sock: socket.socket, limit: int | None) -> bytes | None:
    head = _recv_exact(sock, _FRAME.size)
    if head is None:
        return None
    (n,) = _FRAME.unpack(head)
    if limit is not None and n > limit:
        raise OSError(f"frame of {n} bytes refused")
    return _recv_exact(sock, n)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)
