"""StrategyQA (Geva et al. 2021), the train (2061) / dev (229) split of eladsegal/strategyqa; yes/no answers."""

from __future__ import annotations

import json
from pathlib import Path

from mixdistill.tasks.base import Problem, TaskDef, parse_gold_bool

SOURCE = "eladsegal/strategyqa"
LICENSE = "MIT"
FILES = {s: f"strategyqa/data/strategyqa/{s}.json" for s in ("train", "dev")}


def load(data: Path, split: str) -> list[Problem]:
    rows = json.loads((data / FILES[split]).read_text(encoding="utf-8"))
    out = []
    for r in rows:
        gold = parse_gold_bool(r["answer"])
        out.append(
            Problem.make(
                task="strategyqa",
                question=r["question"],
                gold=gold,
                gold_text="yes" if gold else "no",
                source=SOURCE,
                source_id=r["qid"],
                license=LICENSE,
            )
        )
    return out


TASK = TaskDef(
    name="strategyqa",
    description="StrategyQA yes/no multi-hop questions; train/dev",
    answer_type="bool",
    license=LICENSE,
    splits=("train", "dev"),
    files=tuple(FILES.values()),
    load=load,
    source=SOURCE,
    eval_splits=("dev",),
)
