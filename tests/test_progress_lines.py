"""Long stages print progress lines also when stdout is not a terminal (issue 11, item 8)."""

from __future__ import annotations

import io
import time

from rich.console import Console

from mixdistill import progress


def test_progress_prints_plain_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.05)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with progress.Progress(console=console) as bar:
        task = bar.add_task("generate", total=10, errors=0, spend=0.0)
        for i in range(5):
            bar.update(task, advance=1, errors=i // 2, spend=0.01 * i)
            time.sleep(0.06)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("generate: ")]
    assert len(lines) >= 2
    assert "/10 (" in lines[-1] and "errors " in lines[-1] and "spend 0.0" in lines[-1]


def test_no_lines_in_a_terminal_or_when_disabled(monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.02)
    for console, disable in ((Console(file=io.StringIO(), force_terminal=True), False),
                             (Console(file=io.StringIO(), force_terminal=False), True)):
        with progress.Progress(console=console, disable=disable) as bar:
            bar.add_task("verify", total=3)
            time.sleep(0.1)
        assert "verify: " not in console.file.getvalue()


def test_a_task_that_does_not_move_is_printed_once_per_quiet_period(monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.02)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with progress.Progress(console=console) as bar:
        task = bar.add_task("eval", total=10)
        bar.update(task, advance=1)
        time.sleep(0.3)  # about 15 ticks with nothing new
        bar.update(task, advance=1)
        time.sleep(0.1)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("eval: ")]
    assert [line.split(" (")[0] for line in lines] == ["eval: 1/10", "eval: 2/10"]
    monkeypatch.setattr(progress, "QUIET_S", 0.0)  # a quiet period of 0: every tick prints
    out.truncate(0)
    with progress.Progress(console=console) as bar:
        bar.add_task("eval", total=10, completed=1)
        time.sleep(0.2)
    assert out.getvalue().count("eval: 1/10") >= 3
