"""SVAMP (Patel et al. 2021): 1000 challenge problems, plus the 800/200 split of distilling-step-by-step.

The DSS split permutes SVAMP.json with `np.random.RandomState(0).permutation(1000)`; the first 800 are train, the
last 200 test. The MD paper trains and tests on that split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mixdistill.tasks.base import Problem, TaskDef

SOURCE = "arkilpatel/SVAMP"
FILE = "svamp/SVAMP.json"
LICENSE = "MIT"


def _all(data: Path) -> list[Problem]:
    rows = json.loads((data / FILE).read_text(encoding="utf-8"))
    return [
        Problem.make(
            task="svamp",
            # PAL/PoT style: body and question joined by a space (the body often lacks its final period).
            question=f"{r['Body'].strip()} {r['Question'].strip()}",
            gold=float(r["Answer"]),
            gold_text=_fmt(float(r["Answer"])),
            source=SOURCE,
            source_id=r["ID"],
            license=LICENSE,
        )
        for r in rows
    ]


def _fmt(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


def dss_permutation(n: int = 1000) -> np.ndarray:
    return np.random.RandomState(0).permutation(n)


def load(data: Path, split: str) -> list[Problem]:
    problems = _all(data)
    if split == "full":
        return problems
    order = dss_permutation(len(problems))
    idx = order[:800] if split == "train" else order[800:]
    return [problems[i] for i in idx]


TASK = TaskDef(
    name="svamp",
    description="SVAMP arithmetic word problems; full 1000 and the distilling-step-by-step 800/200 split",
    answer_type="number",
    license=LICENSE,
    splits=("full", "train", "test"),
    files=(FILE,),
    load=load,
    source=SOURCE,
    eval_splits=("test",),
)
