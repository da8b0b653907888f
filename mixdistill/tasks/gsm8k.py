"""GSM8K (Cobbe et al. 2021), official train (7473) / test (1319); gold is the number after `####`."""

from __future__ import annotations

import json
from pathlib import Path

from mixdistill.errors import TaskError
from mixdistill.tasks.base import Problem, TaskDef, parse_gold_number

SOURCE = "openai/grade-school-math"
LICENSE = "MIT"
FILES = {s: f"gsm8k/grade_school_math/data/{s}.jsonl" for s in ("train", "test")}


def gold_from_solution(solution: str) -> str:
    """The text after the last `####` of a GSM8K solution, e.g. `1,234`."""
    if "####" not in solution:
        raise ValueError("solution has no '####' final answer line")
    return solution.rsplit("####", 1)[1].strip()


def load(data: Path, split: str) -> list[Problem]:
    path = data / FILES[split]
    problems = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            r = json.loads(line)
            try:
                gold_text = gold_from_solution(r["answer"])
                gold = parse_gold_number(gold_text)
            except ValueError as e:
                raise TaskError(f"{path}:{i + 1}: {e}") from None
            problems.append(
                Problem.make(
                    task="gsm8k",
                    question=r["question"],
                    gold=gold,
                    gold_text=gold_text.replace(",", ""),
                    source=SOURCE,
                    source_id=f"{split}-{i}",
                    license=LICENSE,
                )
            )
    return problems


TASK = TaskDef(
    name="gsm8k",
    description="GSM8K grade-school math; official train/test",
    answer_type="number",
    license=LICENSE,
    splits=("train", "test"),
    files=tuple(FILES.values()),
    load=load,
    source=SOURCE,
    eval_splits=("test",),
)
