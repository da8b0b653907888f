"""GSM8K (Cobbe et al. 2021), official train (7473) / test (1319); gold is the number after `####`."""

from __future__ import annotations

import json
from pathlib import Path

from mixdistill.errors import TaskError
from mixdistill.tasks.base import HubCopy, Problem, TaskDef, field, parse_gold_number

SOURCE = "openai/grade-school-math"
LICENSE = "MIT"
FILES = {s: f"gsm8k/grade_school_math/data/{s}.jsonl" for s in ("train", "test")}


def gold_from_solution(solution: str) -> str:
    """The text after the last `####` of a GSM8K solution, e.g. `1,234`."""
    if "####" not in solution:
        raise ValueError("solution has no '####' final answer line")
    return solution.rsplit("####", 1)[1].strip()


def from_rows(rows, split: str, source: str = SOURCE, where: str = "") -> list[Problem]:
    """GSM8K records (`question`, `answer` = solution ending in `#### N`), from the upstream files or a Hub copy."""
    problems = []
    for i, r in enumerate(rows):
        try:
            gold_text = gold_from_solution(field(r, "answer"))
            gold = parse_gold_number(gold_text)
        except ValueError as e:
            raise TaskError(f"{where or source}: row {i + 1}: {e}") from None
        problems.append(
            Problem.make(
                task="gsm8k",
                question=field(r, "question"),
                gold=gold,
                gold_text=gold_text.replace(",", ""),
                source=source,
                source_id=f"{split}-{i}",
                license=LICENSE,
            )
        )
    return problems


def load(data: Path, split: str) -> list[Problem]:
    path = data / FILES[split]
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return from_rows(rows, split, where=str(path))


TASK = TaskDef(
    name="gsm8k",
    description="GSM8K grade-school math; official train/test",
    answer_type="number",
    license=LICENSE,
    splits=("train", "test"),
    files=tuple(FILES.values()),
    load=load,
    source=SOURCE,
    from_rows=from_rows,
    hub=HubCopy("openai/gsm8k", "main", "train", "the same 7473 / 1319 problems and fields as the upstream files"),
    eval_splits=("test",),
)
