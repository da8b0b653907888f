"""Auditing while a build runs (issue 11): `sql` and `info` get their queries answered by the writer itself, as of its
last commit, and can only read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mixdistill.errors import RegistryError
from mixdistill.registry import Registry
from mixdistill.registry.serve import socket_path

WRITER = """
import itertools, select, sys
from mixdistill.registry import Registry
with Registry.open({path!r}) as reg:
    for i in itertools.count(1):  # one committed insert every 20 ms, each reported once committed, until told to stop
        reg.insert("runs", [{{"run_id": f"r{{i}}", "kind": "build", "status": "done"}}])
        print(i, flush=True)
        if select.select([sys.stdin], [], [], 0.02)[0]:
            break
"""


def _writer(path):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER.format(path=str(path)))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_readers_see_every_commit_made_before_they_read(cli, registry_path):
    writer = _writer(registry_path)
    try:
        for _ in range(3):
            committed = int(writer.stdout.readline())  # the writer has committed this many rows (or more) by now
            t0 = time.monotonic()
            with Registry.open(registry_path, read_only=True) as reg:
                assert reg.writer_pid == writer.pid
                seen = reg.scalar("SELECT count(*) FROM runs")
            assert seen >= committed
            assert time.monotonic() - t0 < 5.0  # never waits for the writer to finish (bench readers times it)
        code, out, err = cli("sql", "SELECT count(*) AS n FROM runs", "-f", "csv")
        assert code == 0 and int(out.splitlines()[1]) >= committed, err
        code, out, _ = cli("info")
        assert code == 0 and f"being written by another process ({writer.pid})" in out and "runs" in out
    finally:
        writer.communicate("stop\n", timeout=60)
    assert not socket_path(registry_path).exists()  # the writer cleans up after itself
    with Registry.open(registry_path, read_only=True) as reg:
        assert reg.writer_pid is None and reg.scalar("SELECT count(*) FROM runs") >= committed


def test_a_reader_through_the_writer_can_only_read(cli, registry_path, tmp_path):
    writer = _writer(registry_path)
    try:
        writer.stdout.readline()
        with Registry.open(registry_path, read_only=True) as reg:
            for statement in ("DELETE FROM runs", "DROP TABLE runs", "CHECKPOINT", "PRAGMA threads=1",
                              "SET threads = 1", "SELECT 1; DELETE FROM runs"):
                with pytest.raises(RegistryError, match="served|one statement"):
                    reg.con.execute(statement)
            with pytest.raises(RegistryError, match="file system operations are disabled"):
                reg.con.execute("SELECT * FROM read_text('/etc/hostname')")
            assert reg.scalar("SELECT count(*) FROM runs") > 0  # the connection still answers after refusals
        secret = tmp_path / "secret.txt"
        secret.write_text("not for the registry")
        code, out, err = cli("sql", f"SELECT content FROM read_text('{secret}')")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "not for the registry" not in out + err, err
        code, _, err = cli("sql", "DELETE FROM runs")
        assert code == 2 and "only SELECT and EXPLAIN are served" in err and len(err.strip().splitlines()) == 1, err
        code, out, err = cli("sql", "SELECT INTERVAL 90 MINUTE AS span", "-f", "csv")
        assert code == 0 and "01:30:00" in out, err
    finally:
        writer.communicate("stop\n", timeout=60)
    with Registry.open(registry_path, read_only=True) as reg:
        assert reg.scalar("SELECT count(*) FROM runs") > 0


def test_a_writer_killed_without_cleaning_up_leaves_nothing_in_the_next_ones_way(registry_path):
    writer = _writer(registry_path)
    writer.stdout.readline()
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    assert socket_path(registry_path).exists()  # its socket file stays behind
    with Registry.open(registry_path, read_only=True) as reg:  # the file is free again: read directly
        assert reg.writer_pid is None
    second = _writer(registry_path)
    try:
        second.stdout.readline()
        with Registry.open(registry_path, read_only=True) as reg:
            assert reg.writer_pid == second.pid and reg.scalar("SELECT count(*) FROM runs") > 0
    finally:
        second.communicate("stop\n", timeout=60)


def test_bench_readers_reports_latency_staleness_and_slowdown():
    done = subprocess.run([sys.executable, "-m", "mixdistill", "bench", "readers", "--seconds", "1", "--size", "2000"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "paced: writer slowdown" in out and "read latency median / max s" in out
    fresh = out.split("as of the last commit: ")[1].split(";")[0]  # e.g. "met (9/9)": every read saw every commit
    seen, total = fresh.split("(")[1].rstrip(")").split("/")
    assert fresh.startswith("met") and seen == total and int(total) > 0, out


def test_closing_the_writer_cuts_off_a_connected_reader(registry_path):
    """A reader still connected when the writer closes gets a one-line error, and the file is free at once (no
    reader's cursor keeps the database open in the writer's process)."""
    from mixdistill.registry.serve import connect

    with Registry.open(registry_path) as writer:
        writer.insert("runs", [{"run_id": "r1", "kind": "build", "status": "done"}])
        remote = connect(registry_path, None)
        assert remote is not None and remote.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
    with pytest.raises(RegistryError, match="went away"):
        remote.execute("SELECT count(*) FROM runs")
    remote.close()
    with Registry.open(registry_path) as again:  # reopened for writing in the same process
        assert again.scalar("SELECT count(*) FROM runs") == 1
