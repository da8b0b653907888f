"""Progress that is seen also in a log file or CI: rich's bar in a terminal, a plain line every few seconds elsewhere.

rich draws nothing while its output is not a terminal (a CI log, `> build.log`) until the bar ends, so a long stage
was silent for its whole length. `Progress` here is rich's, plus a reporter thread that, when the console is not a
terminal, prints one line per task every `LINE_EVERY_S`: done/total, rate, ETA and the task's own fields (errors,
spend). A task that has not moved (a batch of long generations in flight) is repeated only every `QUIET_S`, so the
log shows it alive without a screen of identical lines. Stages import `Progress` from here instead of from rich;
nothing else changes for them.
"""

from __future__ import annotations

import threading
import time

from rich import progress as rich_progress

LINE_EVERY_S = 5.0
QUIET_S = 60.0  # a task with nothing new is printed again after this long


class Progress(rich_progress.Progress):
    def start(self) -> None:
        super().start()
        self._lines_stop = threading.Event()
        self._lines = None
        if not self.disable and not self.console.is_terminal:
            self._lines = threading.Thread(target=self._print_lines, name="progress-lines", daemon=True)
            self._lines.start()

    def stop(self) -> None:
        lines = getattr(self, "_lines", None)
        if lines is not None:
            self._lines_stop.set()
            lines.join()
        super().stop()

    def _print_lines(self) -> None:
        last: dict = {}  # task id -> (what it showed, when it was printed)
        while not self._lines_stop.wait(LINE_EVERY_S):
            now = time.monotonic()
            for task, line in self.lines():
                state = (task.completed, tuple(task.fields.items()))
                shown = last.get(task.id)
                if shown is not None and shown[0] == state and now - shown[1] < QUIET_S:
                    continue
                last[task.id] = (state, now)
                self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def lines(self) -> list[tuple[rich_progress.Task, str]]:
        """One plain line per unfinished task."""
        out = []
        for task in self.tasks:
            if task.finished:
                continue
            total = f"/{task.total:.0f}" if task.total is not None else ""
            pct = f" ({task.percentage:.0f}%)" if task.total else ""
            rate = f", {task.speed:.1f}/s" if task.speed else ""
            eta = f", ETA {task.time_remaining:.0f} s" if task.time_remaining is not None else ""
            extra = "".join(f", {k} {_fmt(v)}" for k, v in task.fields.items() if k != "rate")
            out.append((task, f"{task.description}: {task.completed:.0f}{total}{pct}{rate}{eta}{extra}"))
        return out


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
