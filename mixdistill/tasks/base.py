"""The one problem schema every task is normalised to, and strict gold-answer parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Literal

from mixdistill.errors import TaskError
from mixdistill.ids import problem_id

AnswerType = Literal["number", "bool"]


@dataclass(frozen=True)
class Problem:
    """One reasoning problem with a gold answer, as stored in the `problems` table.

    `problem_id` hashes (task, source, source_id) only, so the same SVAMP problem has one id whether it is loaded
    through the full set or the 800/200 split: split membership is a separate fact (`problem_splits`).
    """

    problem_id: str
    task: str
    question: str
    answer_type: AnswerType
    gold_text: str
    gold_number: float | None
    gold_bool: bool | None
    source: str
    source_id: str
    license: str

    @classmethod
    def make(
        cls,
        *,
        task: str,
        question: str,
        gold: float | bool,
        gold_text: str,
        source: str,
        source_id: str,
        license: str,
    ) -> "Problem":
        is_bool = isinstance(gold, bool)
        return cls(
            problem_id=problem_id(task, source, source_id),
            task=task,
            question=question.strip(),
            answer_type="bool" if is_bool else "number",
            gold_text=gold_text,
            gold_number=None if is_bool else float(gold),
            gold_bool=gold if is_bool else None,
            source=source,
            source_id=str(source_id),
            license=license,
        )


PROBLEM_FIELDS = tuple(f.name for f in fields(Problem))  # the `problems` table's columns, stored column by column

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")


def parse_gold_number(text: str) -> float:
    """Parse a gold answer that must be exactly one number: `1,234`, `-3.5`, `42`.

    Gold parsing is strict on purpose (a silent mis-parse would poison every verdict): anything that is not a single
    number, optionally with thousands separators, raises ValueError.
    """
    s = str(text).strip().replace("$", "")
    if not s or not _NUMBER.fullmatch(s) or not any(ch.isdigit() for ch in s):
        raise ValueError(f"gold answer {text!r} is not a number")
    return float(s.replace(",", ""))


def parse_gold_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in {"true", "yes", "1"}:
        return True
    if s in {"false", "no", "0"}:
        return False
    raise ValueError(f"gold answer {value!r} is not a boolean (yes/no/true/false)")


def field(row: dict, name: str):
    """A record's field by name, case-insensitively (Hub copies often lower-case upstream names); missing: an error."""
    if name in row:
        return row[name]
    for key, value in row.items():
        if key.lower() == name.lower():
            return value
    raise TaskError(f"record has no field {name!r}; fields: {', '.join(row)}")


@dataclass(frozen=True)
class HubCopy:
    """A known public copy of a task on the Hugging Face Hub (`source: hub`), and how it differs from upstream."""

    id: str
    config: str | None
    split: str  # the split used when the recipe names none
    differs: str


@dataclass(frozen=True)
class TaskDef:
    """A built-in task: where its files live under the data dir and how to load each split."""

    name: str
    description: str
    answer_type: AnswerType
    license: str
    splits: tuple[str, ...]
    files: tuple[str, ...]  # paths relative to the data dir that the loader reads
    load: Callable[[Path, str], list[Problem]]
    eval_splits: tuple[str, ...] = ()  # kept out of training corpora by the contamination guard
    source: str = ""  # the upstream repository (owner/name): pins and citation in mixdistill.tasks.sources
    from_rows: Callable[..., list[Problem]] | None = None  # records (upstream fields) -> problems, for `source: hub`
    hub: HubCopy | None = None

    def require_files(self, data: Path) -> None:
        missing = [f for f in self.files if not (data / f).is_file()]
        if missing:
            raise TaskError(
                f"task {self.name!r}: missing source file {data / missing[0]}; the data dir ({data}) is --data-dir, "
                f"else $MIXDISTILL_DATA, else $MIXDISTILL_HOME/data, and holds {', '.join(self.files)} for this task "
                f"(`mixdistill data fetch {self.name}` downloads them; README, \"Benchmark data\")"
            )

    def load_split(self, data: Path, split: str) -> list[Problem]:
        if split not in self.splits:
            raise TaskError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        self.require_files(data)
        return self.load(data, split)
