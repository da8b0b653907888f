"""Built-in tasks loaded from a Hugging Face Hub dataset (`source: hub` in a recipe), through `datasets.load_dataset`.

The records are mapped by the task's own `from_rows`, so a Hub copy with the upstream fields gives the same problem
schema; its problems are recorded with source `hub:<id>` (a copy is not the upstream file, so ids do not collide).
`id` may also be a local dataset folder, which is how the tests run offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixdistill.errors import TaskError
from mixdistill.tasks.base import Problem, TaskDef


@dataclass(frozen=True)
class HubSource:
    task: str
    id: str
    config: str | None
    revision: str | None

    @property
    def label(self) -> str:
        return f"hub dataset {self.id}" + (f" ({self.config})" if self.config else "") + (
            f" @ {self.revision}" if self.revision else "")


def load(task: TaskDef, src: HubSource, split: str) -> list[Problem]:
    import datasets

    try:
        ds = datasets.load_dataset(src.id, src.config, split=split, revision=src.revision)
    except Exception as e:  # datasets raises many types; the user needs the id, the split and the reason
        raise TaskError(f"task {task.name!r}: cannot load split {split!r} of {src.label}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    try:
        return task.from_rows(ds.to_list(), split, f"hub:{src.id}")
    except (TaskError, ValueError, TypeError) as e:
        raise TaskError(f"task {task.name!r}: {src.label}, split {split!r}: {e}") from None
