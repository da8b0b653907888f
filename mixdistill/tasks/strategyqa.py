"""StrategyQA (Geva et al. 2021), the train (2061) / dev (229) split of eladsegal/strategyqa; yes/no answers."""

from __future__ import annotations

import json
from pathlib import Path

from mixdistill.tasks.base import HubCopy, Problem, TaskDef, field, parse_gold_bool

SOURCE = "eladsegal/strategyqa"
LICENSE = "MIT"
FILES = {s: f"strategyqa/data/strategyqa/{s}.json" for s in ("train", "dev")}


def from_rows(rows, split: str, source: str = SOURCE) -> list[Problem]:
    """StrategyQA records (`qid`, `question`, `answer` yes/no), from the upstream files or a Hub copy."""
    out = []
    for r in rows:
        gold = parse_gold_bool(field(r, "answer"))
        out.append(
            Problem.make(
                task="strategyqa",
                question=field(r, "question"),
                gold=gold,
                gold_text="yes" if gold else "no",
                source=source,
                source_id=str(field(r, "qid")),
                license=LICENSE,
            )
        )
    return out


def load(data: Path, split: str) -> list[Problem]:
    return from_rows(json.loads((data / FILES[split]).read_text(encoding="utf-8")), split)


TASK = TaskDef(
    name="strategyqa",
    description="StrategyQA yes/no multi-hop questions; train/dev",
    answer_type="bool",
    license=LICENSE,
    splits=("train", "dev"),
    files=tuple(FILES.values()),
    load=load,
    source=SOURCE,
    from_rows=from_rows,
    hub=HubCopy("ChilleD/StrategyQA", None, "train",
                "the 2290 questions of the official StrategyQA train set split 1603 train / 687 test (not this "
                "repository's 2061 / 229 train / dev split)"),
    eval_splits=("dev",),
)
