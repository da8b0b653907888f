"""ASDiv (Miao et al. 2020) and its arithmetic subset ASDiv-A (the 5 folds used by the SVAMP paper).

Gold answers look like `9 (apples)`; the unit is dropped. 221 of the 2305 problems have an answer that is not one
number (several numbers `6 (cm); 15 (cm)`, a name, a time such as `3:30 p.m.`, a ratio `3:4`, yes/no); they are left
out, since the checker compares single numbers, leaving 2084. Every ASDiv-A problem is numeric. License: CC BY-NC 4.0 (non-commercial).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from mixdistill.tasks.base import HubCopy, Problem, TaskDef, field, parse_gold_number

SOURCE = "chaochun/nlu-asdiv-dataset"
LICENSE = "CC-BY-NC-4.0"
XML = "asdiv/dataset/ASDiv.xml"
FOLDS = tuple(f"asdiv/dataset/nfolds/asdiv-a/fold{i}.txt" for i in range(5))
_UNIT = re.compile(r"\s*\([^)]*\)?\s*$")


def _numeric(data: Path) -> dict[str, Problem]:
    root = ET.parse(data / XML).getroot()
    out: dict[str, Problem] = {}
    for p in root.iter("Problem"):
        answer = _UNIT.sub("", p.findtext("Answer") or "")
        try:
            gold = parse_gold_number(answer)
        except ValueError:
            continue  # non-numeric answer: see module docstring
        body, question = (p.findtext("Body") or "").strip(), (p.findtext("Question") or "").strip()
        out[p.get("ID")] = Problem.make(
            task="asdiv",
            question=f"{body} {question}",
            gold=gold,
            gold_text=answer.replace(",", ""),
            source=SOURCE,
            source_id=p.get("ID"),
            license=LICENSE,
        )
    return out


def from_rows(rows, split: str, source: str = SOURCE) -> list[Problem]:
    """ASDiv records of a Hub copy (`body`, `question`, `answer` "9 (apples)"; no problem id: the row number is the
    id); problems whose answer is not one number are left out, as for the upstream XML."""
    out = []
    for i, r in enumerate(rows):
        answer = _UNIT.sub("", str(field(r, "answer")))
        try:
            gold = parse_gold_number(answer)
        except ValueError:
            continue
        out.append(Problem.make(
            task="asdiv", question=f"{str(field(r, 'body')).strip()} {str(field(r, 'question')).strip()}", gold=gold,
            gold_text=answer.replace(",", ""), source=source, source_id=f"{split}-{i}", license=LICENSE,
        ))
    return out


def _fold_ids(data: Path, folds: range | list[int]) -> list[str]:
    return [line.strip() for i in folds for line in (data / FOLDS[i]).read_text().splitlines() if line.strip()]


def load(data: Path, split: str) -> list[Problem]:
    problems = _numeric(data)
    if split == "all":
        return list(problems.values())
    folds = range(5) if split == "asdiv-a" else [int(split.removeprefix("asdiv-a-fold"))]
    return [problems[i] for i in _fold_ids(data, folds)]


TASK = TaskDef(
    name="asdiv",
    description="ASDiv math word problems with numeric answers; ASDiv-A subset and its 5 folds",
    answer_type="number",
    license=LICENSE,
    splits=("all", "asdiv-a", *(f"asdiv-a-fold{i}" for i in range(5))),
    files=(XML, *FOLDS),
    load=load,
    source=SOURCE,
    from_rows=from_rows,
    hub=HubCopy("EleutherAI/asdiv", None, "validation",
                "the 2305 ASDiv problems in one `validation` split, without the problem ids or the ASDiv-A folds "
                "(rows are numbered instead, so problem ids differ from the upstream XML's)"),
)
