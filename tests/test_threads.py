"""`threads:` in train and eval recipes and `--threads`: bad values are one line naming the field, exit 2, before any
model is loaded (through the real console script); the default on small machines leaves a core free."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mixdistill.cpu as cpu


def run_cli(*args: str) -> subprocess.CompletedProcess:
    script = shutil.which("mixdistill", path=str(Path(sys.executable).parent))
    cmd = [script] if script else [sys.executable, "-m", "mixdistill"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


def one_error_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and all(n in lines[0] for n in needles), lines[0]


@pytest.fixture
def not_a_model(tmp_path) -> Path:
    """A folder that exists but holds no model: loading it would fail with another message."""
    folder = tmp_path / "student"
    folder.mkdir()
    return folder


def test_bad_threads_are_one_line_before_any_model_load(tmp_path, not_a_model):
    train = tmp_path / "train.yaml"
    body = f"kind: train\nname: t\nstudent: {not_a_model}\ncorpus: {{parquet: {tmp_path}}}\noutput_dir: {tmp_path}/run\n"
    train.write_text(body)
    one_error_line(run_cli("train", str(train), "--threads", "0"), "--threads", "at least 1", "0")
    train.write_text(body + "threads: 0\n")
    one_error_line(run_cli("train", str(train)), "train.yaml: threads:", "greater than or equal to 1")

    ev = tmp_path / "eval.yaml"
    ev.write_text(f"kind: eval\nname: e\nmodel: {not_a_model}\ntasks: [{{task: svamp}}]\nthreads: many\n")
    one_error_line(run_cli("eval", str(ev)), "eval.yaml: threads:", "valid integer")
    ev.write_text(f"kind: eval\nname: e\nmodel: {not_a_model}\ntasks: [{{task: svamp}}]\n")
    one_error_line(run_cli("eval", str(ev), "--threads", "-1"), "--threads", "-1")


def test_default_threads_leave_a_core_free_on_small_machines(monkeypatch):
    for cores, expected in ((1, 1), (2, 1), (4, 3), (16, 16)):
        monkeypatch.setattr(cpu, "available_cores", lambda c=cores: c)
        assert cpu.default_threads() == expected
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert cpu.set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(cpu, "available_cores", lambda: 2)
        assert cpu.set_threads(None) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(cpu.MixdistillError, match="--threads: .* not 0"):
        cpu.check_threads(0, "--threads")
