"""Task loaders: each benchmark normalised to one `Problem` schema.

Built-in tasks read the upstream files from the data dir (`settings.data_dir`); custom tasks map columns of any
file or Hub dataset (`CustomTask`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mixdistill.errors import TaskError
from mixdistill.tasks import asdiv, gsm8k, strategyqa, svamp
from mixdistill.tasks.base import AnswerType, Problem, TaskDef, parse_gold_bool, parse_gold_number
from mixdistill.tasks.custom import CustomTask
from mixdistill.tasks.hub import HubSource

TASKS: dict[str, TaskDef] = {t.name: t for t in (svamp.TASK, gsm8k.TASK, asdiv.TASK, strategyqa.TASK)}

__all__ = [
    "TASKS",
    "AnswerType",
    "CustomTask",
    "HubSource",
    "Problem",
    "TaskDef",
    "get_task",
    "load_problems",
    "problem_chunks",
    "parse_gold_bool",
    "parse_gold_number",
]


def get_task(name: str) -> TaskDef:
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or define a custom task)") from None


def load_problems(task: str | CustomTask | HubSource, split: str | None, data_dir: Path) -> tuple[str, list[Problem]]:
    """Load one split of a built-in task (its files, or a Hub copy) or a custom task; returns (split, problems)."""
    if isinstance(task, CustomTask):
        from mixdistill.tasks.custom import load

        return task.split, load(task)
    if isinstance(task, HubSource):
        from mixdistill.tasks import hub

        t = get_task(task.task)
        split = split or t.hub.split
        return split, hub.load(t, task, split)
    t = get_task(task)
    split = split or t.splits[0]
    return split, t.load_split(data_dir, split)


def problem_chunks(task: str | CustomTask | HubSource, split: str | None,
                   data_dir: Path) -> tuple[str, Iterator[list[Problem]]]:
    """(split, the problems in chunks of `custom.CHUNK`): a custom task's file is read a chunk at a time (each row
    checked as it is read; a repeated id raises after the last chunk), a built-in task (small) at once."""
    from mixdistill.tasks import custom

    if isinstance(task, CustomTask):
        return task.split, custom.load_chunks(task)
    split, problems = load_problems(task, split, data_dir)
    return split, (problems[i : i + custom.CHUNK] for i in range(0, len(problems), custom.CHUNK))
