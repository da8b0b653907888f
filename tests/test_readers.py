"""Auditing while a build runs (issue 11): `sql` and `info` read the writer's latest snapshot instead of waiting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from mixdistill.registry import Registry
from mixdistill.registry.snapshot import ask_for_snapshot, snapshot_path

WRITER = """
import itertools, select, sys
from mixdistill.registry import Registry
with Registry.open({path!r}) as reg:
    for i in itertools.count():  # one committed insert every 20 ms until told to stop
        reg.insert("runs", [{{"run_id": f"r{{i}}", "kind": "build", "status": "done"}}])
        if i == 20:
            print("ready", flush=True)
        if select.select([sys.stdin], [], [], 0.02)[0]:
            break
"""


def test_readers_see_recent_commits_while_a_writer_holds_the_registry(cli, registry_path):
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER.format(path=str(registry_path)))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        seen, deadline = [], time.monotonic() + 60
        while len(set(seen)) < 3 and time.monotonic() < deadline:  # newer commits keep arriving in the snapshot
            t0 = time.monotonic()
            with Registry.open(registry_path, read_only=True) as reg:
                seen.append(reg.scalar("SELECT count(*) FROM runs"))
                assert reg.path == snapshot_path(registry_path)
            assert time.monotonic() - t0 < 5.0  # a read never waits for the writer (bench readers times it)
            time.sleep(0.3)
        assert len(set(seen)) == 3 and seen == sorted(seen)
        code, out, err = cli("sql", "SELECT count(*) AS n FROM runs", "-f", "csv")
        assert code == 0 and int(out.splitlines()[1]) >= seen[2], err
        code, out, _ = cli("info")
        assert code == 0 and "being written by another process" in out and "runs" in out
    finally:
        writer.communicate("stop\n", timeout=60)
    assert not snapshot_path(registry_path).exists()  # the writer cleans up after itself
    with Registry.open(registry_path, read_only=True) as reg:
        assert reg.path == registry_path


def test_closing_during_a_snapshot_copy_interrupts_it_quietly(registry_path, monkeypatch, caplog):
    """`close()` interrupts a copy in progress on purpose: that is not a failure to report."""
    import threading

    from mixdistill.registry.snapshot import Snapshots

    copying = threading.Event()

    class Cursor:
        def __init__(self):
            self.interrupted = threading.Event()

        def interrupt(self):
            self.interrupted.set()

    def slow_copy(self):
        self._cursor = cursor = Cursor()
        copying.set()
        cursor.interrupted.wait(10)
        raise RuntimeError("INTERRUPT Error: Interrupted!")  # what duckdb raises in the interrupted COPY

    monkeypatch.setattr(Snapshots, "_publish", slow_copy)
    monkeypatch.setattr("mixdistill.registry.snapshot.MIN_INTERVAL_S", 0.0)
    with caplog.at_level("WARNING", logger="mixdistill.registry.snapshot"):
        with Registry.open(registry_path) as reg:
            ask_for_snapshot(registry_path)  # as a reader does: the writer copies only once asked
            reg.insert("runs", [{"run_id": "r1", "kind": "build", "status": "done"}])
            assert copying.wait(10)
    assert not caplog.records


def test_a_writer_copies_nothing_until_a_reader_asks(registry_path, monkeypatch):
    """A build nobody audits pays nothing for snapshots (`bench teachers`: about 0.1 ms of CPU per answer); once a
    reader has asked, the writer publishes after its commits as before, and cleans up the request when it closes."""
    from mixdistill.registry.snapshot import wanted_path

    monkeypatch.setattr("mixdistill.registry.snapshot.MIN_INTERVAL_S", 0.0)
    with Registry.open(registry_path) as reg:
        for i in range(10):
            reg.insert("runs", [{"run_id": f"r{i}", "kind": "build", "status": "done"}])
            time.sleep(0.05)
        time.sleep(0.5)
        assert not snapshot_path(registry_path).exists() and reg.snapshots.published == 0
        assert ask_for_snapshot(registry_path)
        deadline = time.monotonic() + 10
        while not snapshot_path(registry_path).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reg.snapshots.published >= 1
    assert not snapshot_path(registry_path).exists() and not wanted_path(registry_path).exists()
