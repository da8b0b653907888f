"""SVAMP (Patel et al. 2021): 1000 challenge problems, plus the 800/200 split of distilling-step-by-step.

The DSS split permutes SVAMP.json with `np.random.RandomState(0).permutation(1000)`; the first 800 are train, the
last 200 test. The MD paper trains and tests on that split.
"""

from __future__ import annotations

import json
from pathlib import Path

from mixdistill.tasks.base import HubCopy, Problem, TaskDef, field

SOURCE = "arkilpatel/SVAMP"
FILE = "svamp/SVAMP.json"
LICENSE = "MIT"


def from_rows(rows: list[dict], split: str, source: str = SOURCE) -> list[Problem]:
    """SVAMP records (`ID`, `Body`, `Question`, `Answer`: the upstream file's fields, also those of its Hub copies)."""
    return [
        Problem.make(
            task="svamp",
            # PAL/PoT style: body and question joined by a space (the body often lacks its final period).
            question=f"{field(r, 'Body').strip()} {field(r, 'Question').strip()}",
            gold=float(field(r, "Answer")),
            gold_text=_fmt(float(field(r, "Answer"))),
            source=source,
            source_id=str(field(r, "ID")),
            license=LICENSE,
        )
        for r in rows
    ]


def _all(data: Path) -> list[Problem]:
    return from_rows(json.loads((data / FILE).read_text(encoding="utf-8")), "full")


def _fmt(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


def dss_permutation(n: int = 1000) -> list[int]:
    import numpy as np  # here, not at the top: a build of another task need not pay for numpy's import

    return np.random.RandomState(0).permutation(n).tolist()


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
    from_rows=from_rows,
    hub=HubCopy("ChilleD/SVAMP", None, "train",
                "the 1000 SVAMP problems with the upstream fields, split 700 train / 300 test (not the "
                "distilling-step-by-step 800/200 split of `svamp/train` and `svamp/test`)"),
    eval_splits=("test",),
)
