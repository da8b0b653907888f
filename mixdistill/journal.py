"""The answer journal: every answer is on disk the moment it arrives, before the registry commits it.

A build appends each call's rows to `<registry>.journal/<run_id>-<n>.jsonl` with one `write()` on an O_APPEND file,
so a kill -9 at any moment loses only requests still in flight (the kernel keeps what `write` returned for; `fsync`
runs with each registry commit, for power loss). Each registry commit takes the segment holding its rows and deletes
it once they are stored; the next build replays whatever segments a killed run left behind before it plans.

Written by hand: it is one file descriptor and a JSON line per row (orjson: 2 µs a row, against 30 µs with the json
module); a log library would add buffering, which is the one thing this must not have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl

from mixdistill.registry import Registry


def journal_dir(reg: Registry) -> Path:
    return reg.path.with_name(reg.path.name + ".journal")


class Journal:
    """One run's journal, open for appending, in segments `<run_id>-<n>.jsonl`: each commit takes the segment that
    holds exactly its rows (`rotate`) and deletes it once committed, so a journal holds only uncommitted answers, and
    a killed run of millions of answers leaves a few hundred to replay, not all of them."""

    def __init__(self, folder: Path, run_id: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.run_id, self._n = folder, run_id, 0
        self.path = self._segment(0)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _segment(self, n: int) -> Path:
        return self.folder / f"{self.run_id}-{n:08d}.jsonl"

    def append(self, rows: list[dict]) -> None:
        """All of `rows` with one write (a line each); a short write, which only a full disk gives, is finished."""
        data = b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def rotate(self) -> "Segment":
        """Start a new segment for what comes next; returns the old one, whose rows the caller commits."""
        old = Segment(self.path, self._fd)
        self._n += 1
        self.path = self._segment(self._n)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return old

    def close(self, remove: bool) -> None:
        """Close; `remove` once every row it holds is committed to the registry."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)
            try:
                self.folder.rmdir()  # only when no other run's journal is left in it
            except OSError:
                pass


@dataclass(frozen=True)
class Segment:
    """A journal segment handed to a commit: `sync` before the registry says its rows are stored, `remove` after."""

    path: Path
    fd: int

    def sync(self) -> None:
        """Its rows on disk, and its fd closed."""
        os.fsync(self.fd)
        os.close(self.fd)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_journal(path: Path) -> list[dict]:
    """The rows of a journal; a line cut short (a disk that filled up) is skipped, it was never a whole answer."""
    rows = []
    with path.open("rb") as f:
        for line in f:
            try:
                row = orjson.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "request_key" in row:
                rows.append(row)
    return rows


def replay(reg: Registry, schema: dict[str, pl.DataType]) -> int:
    """Commit the rows of journals left by killed runs, then remove them; returns the rows newly stored.

    An answer already stored `ok` is kept as it is; the last row journaled for a key wins over earlier ones."""
    folder = journal_dir(reg)
    if not folder.is_dir():
        return 0
    stored = 0
    for path in sorted(folder.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)):
        rows = read_journal(path)
        if rows:
            df = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)
            df = df.unique("request_key", keep="last", maintain_order=True)
            done = reg.query(
                "SELECT request_key FROM generations WHERE status = 'ok' AND request_key IN (SELECT unnest(?))",
                [df["request_key"].to_list()],
            )
            df = df.filter(~pl.col("request_key").is_in(done["request_key"].implode()))
            if df.height:
                stored += reg.insert("generations", df, on_conflict="replace")
                if df["task"].null_count():  # a journal written before generations kept their task (m009)
                    reg.con.execute(
                        "UPDATE generations SET task = p.task FROM problems p WHERE generations.task IS NULL "
                        "AND generations.problem_id = p.problem_id AND generations.request_key IN (SELECT unnest(?))",
                        [df["request_key"].to_list()])
        path.unlink()
    return stored
