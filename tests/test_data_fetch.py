"""`mixdistill data fetch` against a loopback HTTP server laid out like raw.githubusercontent.com."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from mixdistill.tasks.sources import GSM8K, SVAMP


@contextmanager
def raw_server(root: Path):
    """Serve `root` (`<owner>/<repo>/<commit>/<path>`) on 127.0.0.1; yields (base URL, list of paths requested)."""
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            seen.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def mirror(shared_data: Path, root: Path, corrupt: str | None = None) -> None:
    for src in (SVAMP, GSM8K):
        for f in src.files:
            dest = root / src.repository / src.commit / f.repo_path
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared_data / f.path, dest)
            if f.path == corrupt:
                dest.write_bytes(dest.read_bytes().replace(b"Jack", b"Jill", 1))


def mixdistill(*args: str, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "mixdistill", "--data-dir", str(data), *args],
                          capture_output=True, text=True, env=env)


def test_fetch_downloads_pinned_files_checks_them_and_says_where(cli, shared_data, tmp_path):
    mirror(shared_data, tmp_path / "www")
    data = tmp_path / "data"
    with raw_server(tmp_path / "www") as (base, seen):
        code, out, err = cli("--data-dir", str(data), "data", "fetch", "svamp", "gsm8k", "--base-url", base)
        assert code == 0, err
        assert f"/{SVAMP.repository}/{SVAMP.commit}/SVAMP.json" in seen
        for src in (SVAMP, GSM8K):
            for f in src.files:
                assert hashlib.sha256((data / f.path).read_bytes()).hexdigest() == f.sha256
                assert str(data / f.path) in out
        assert f"data dir: {data} (3 downloaded, 0 already present)" in out
        code, out, _ = cli("--data-dir", str(data), "data", "fetch", "svamp", "--base-url", base)
        assert code == 0 and "(0 downloaded, 1 already present)" in out and len(seen) == 3
    code, out, _ = cli("--data-dir", str(data), "tasks")
    assert code == 0
    line = {row.split("│")[1].strip(): row for row in out.splitlines() if row.count("│") > 3}
    assert "train (800)" in line["svamp"] and "train (7473)" in line["gsm8k"]
    assert "files missing" in line["asdiv"] and "files missing" not in line["svamp"] + line["gsm8k"]
    assert not [p for p in data.iterdir() if p.name.startswith(".mixdistill-fetch-")]


def test_checksum_mismatch_leaves_nothing_and_names_the_file(shared_data, tmp_path):
    mirror(shared_data, tmp_path / "www", corrupt="svamp/SVAMP.json")
    data = tmp_path / "data"
    with raw_server(tmp_path / "www") as (base, _):
        run = mixdistill("data", "fetch", "gsm8k", "svamp", "--base-url", base, data=data)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "svamp/SVAMP.json: SHA-256" in lines[0] and "does not match the pinned" in lines[0]
    assert "nothing was written to the data dir" in lines[0]
    assert list(data.rglob("*")) == []  # not even the gsm8k files that did match
    bad = mixdistill("data", "fetch", "mmlu", data=data)
    assert bad.returncode == 2 and "unknown task 'mmlu'" in bad.stderr
