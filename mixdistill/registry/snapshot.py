"""Read-only snapshots of a registry while a writer holds it, so `sql` and `info` never wait on a build.

DuckDB locks a file opened for writing against every other process, readers included, and has no cross-process
reader mode; this module is the small piece of glue that fills the gap. After a commit, a background thread of the
writer copies the database into `<registry>.snapshot.tmp` with DuckDB's own `COPY FROM DATABASE` on a cursor of its
own (one read transaction: consistent by MVCC, and the writer's inserts go on meanwhile) and renames it into place; a
reader that finds the registry locked opens the snapshot instead (`Registry.open(read_only=True)`).

Why not a plain file copy after CHECKPOINT (100x faster)? Opening and closing the registry file in the writer's
process drops DuckDB's POSIX lock on it (fcntl locks belong to the process and die with any descriptor's close), and
the checkpoint must block the writer.

Cost control: nothing is copied until a reader has asked (a reader that finds the registry locked and no snapshot
creates `<registry>.snapshot.wanted` and waits for the first copy), so a build nobody audits pays nothing: copies cost
about 0.1 ms of CPU per answer in `bench teachers`. From then on a copy starts at most every `max(MIN_INTERVAL_S,
last copy's seconds / MAX_SHARE)`, so copying takes at most `MAX_SHARE` of the wall time. The snapshot and the
request are removed when the writer closes the registry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mixdistill.registry import Registry

MIN_INTERVAL_S = 0.5
MAX_SHARE = 0.04
log = logging.getLogger(__name__)


def snapshot_path(registry: Path) -> Path:
    return registry.with_name(registry.name + ".snapshot")


def wanted_path(registry: Path) -> Path:
    return registry.with_name(registry.name + ".snapshot.wanted")


def ask_for_snapshot(registry: Path) -> bool:
    """Ask the writer of `registry` to publish snapshots; False where the request cannot be written (a read-only
    folder: the reader then finds a snapshot only if someone else asked)."""
    try:
        wanted_path(registry).touch()
    except OSError:
        return False
    return True


class Snapshots:
    """Publishes snapshots of `reg` after its commits, from a daemon thread."""

    def __init__(self, reg: "Registry"):
        self.reg = reg
        self.path = snapshot_path(reg.path)
        self.wanted = wanted_path(reg.path)
        self._asked = False
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._next_at = time.monotonic() + MIN_INTERVAL_S  # commands shorter than this never copy anything
        self.published = 0
        self.seconds = 0.0
        self._one_at_a_time = threading.Lock()
        self._cursor = None
        self._thread = threading.Thread(target=self._loop, name="registry-snapshots", daemon=True)
        self._thread.start()
        self.changed()  # readers see the registry as opened (migrated, stale runs closed) soon after

    def changed(self) -> None:
        self._dirty.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._dirty.wait(0.1):
                continue
            if not self.asked():
                if self._stop.wait(0.1):  # one stat every 0.1 s until a reader asks
                    return
                continue
            wait = self._next_at - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            self._dirty.clear()
            try:
                self.publish()
            except Exception as e:  # a snapshot is a convenience for readers; it must never break the writer
                if self._stop.is_set():
                    return  # `close()` interrupted the copy on purpose
                log.warning("registry snapshot not published: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
                self._next_at = time.monotonic() + 5.0

    def asked(self) -> bool:
        """Whether a reader has asked for snapshots while this writer holds the registry (once asked, always)."""
        self._asked = self._asked or self.wanted.exists()
        return self._asked

    def publish(self) -> None:
        with self._one_at_a_time:
            self._publish()

    def _publish(self) -> None:
        t0 = time.monotonic()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        cur = self._cursor = self.reg.con.cursor()  # its own connection: the writer's commits go on meanwhile
        try:
            cur.execute("SET enable_progress_bar = false")
            (db,) = cur.execute("SELECT current_database()").fetchone()
            cur.execute(f"ATTACH '{_sql_str(tmp)}' AS _mixdistill_snapshot")
            try:
                cur.execute(f'COPY FROM DATABASE "{db}" TO _mixdistill_snapshot')
            finally:
                cur.execute("DETACH _mixdistill_snapshot")
        finally:
            self._cursor = None
            cur.close()
        if self._stop.is_set():
            tmp.unlink(missing_ok=True)
            return
        os.replace(tmp, self.path)
        took = time.monotonic() - t0
        self.published += 1
        self.seconds += took
        self._next_at = time.monotonic() + max(MIN_INTERVAL_S, took / MAX_SHARE)

    def close(self) -> None:
        self._stop.set()
        cur = self._cursor
        if cur is not None:  # a copy in progress is abandoned, not waited for
            try:
                cur.interrupt()
            except Exception:  # noqa: BLE001  (it may have just finished)
                pass
        self._thread.join()
        for p in (self.path, self.path.with_name(self.path.name + ".tmp"), self.wanted):
            p.unlink(missing_ok=True)


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")
