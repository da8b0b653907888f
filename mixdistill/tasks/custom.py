"""Custom tasks: any Parquet / JSONL / JSON / CSV file or Hub dataset, mapped onto the problem schema by column names."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mixdistill.errors import TaskError
from mixdistill.settings import RecipePath
from mixdistill.tasks.base import Problem, parse_gold_bool, parse_gold_number

_READERS = {
    ".parquet": pl.read_parquet,
    ".jsonl": pl.read_ndjson,
    ".ndjson": pl.read_ndjson,
    ".json": pl.read_json,
    ".csv": pl.read_csv,
}


class CustomTask(BaseModel):
    """Where a custom task's rows come from and which columns hold what."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$", description="task name used in the registry")
    path: RecipePath | None = Field(None, description="a local .parquet/.jsonl/.json/.csv file")
    hub: str | None = Field(None, description="a Hub dataset id, loaded with datasets.load_dataset")
    hub_config: str | None = None
    revision: str | None = None
    split: str = Field("train", description="split name recorded in the registry (and read from the Hub)")
    question: str | list[str] = Field(..., description="question column, or columns joined with a space")
    answer: str = Field(..., description="gold answer column")
    id: str | None = Field(None, description="stable id column; the row number when absent")
    answer_type: Literal["number", "bool"] = "number"
    license: str = "unknown"

    @model_validator(mode="after")
    def _one_source(self) -> "CustomTask":
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' or 'hub'")
        return self

    @property
    def source(self) -> str:
        return f"hub:{self.hub}" if self.hub else f"file:{Path(self.path).name}"

    def label(self) -> str:
        return str(self.path) if self.path else f"hub dataset {self.hub}"


def _read(spec: CustomTask) -> pl.DataFrame:
    if spec.hub:
        import datasets

        try:
            ds = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.split, revision=spec.revision)
        except Exception as e:  # datasets raises many types; the user needs the id and the reason
            raise TaskError(f"cannot load {spec.label()}: {type(e).__name__}: {e}".splitlines()[0]) from None
        return pl.from_arrow(ds.data.table)
    path = Path(spec.path)
    if not path.is_file():
        raise TaskError(f"custom task {spec.name!r}: file not found: {path}")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise TaskError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_READERS)}")
    try:
        return reader(path)
    except Exception as e:
        raise TaskError(f"{path}: cannot read as {path.suffix[1:]}: {e}".splitlines()[0]) from None


def load(spec: CustomTask) -> list[Problem]:
    df = _read(spec)
    qcols = [spec.question] if isinstance(spec.question, str) else list(spec.question)
    mapping = [("question", c) for c in qcols] + [("answer", spec.answer)] + ([("id", spec.id)] if spec.id else [])
    for field, col in mapping:
        if col not in df.columns:
            raise TaskError(
                f"{spec.label()}: column {col!r} (mapped to '{field}') not found; columns: {', '.join(df.columns)}"
            )
    if df.height == 0:
        raise TaskError(f"{spec.label()}: no rows (only a header, or an empty file): nothing to import")
    parse = parse_gold_number if spec.answer_type == "number" else parse_gold_bool
    problems = []
    seen_ids: dict[str, int] = {}
    source = spec.source  # once: a property that parses the path (a second per 100,000 rows)
    for i, row in enumerate(df.iter_rows(named=True)):
        if spec.id:  # the id is the problem's identity: an empty or repeated one would merge rows silently
            sid = "" if row[spec.id] is None else str(row[spec.id]).strip()
            if not sid:
                raise TaskError(f"{spec.label()} row {i}: empty id (column {spec.id!r})")
            if sid in seen_ids:
                raise TaskError(f"{spec.label()} row {i}: id {sid!r} repeats row {seen_ids[sid]} (column {spec.id!r})")
            seen_ids[sid] = i
        raw = row[spec.answer]
        try:
            if raw is None:
                raise ValueError("gold answer is missing")
            gold = parse(raw)
        except ValueError as e:
            raise TaskError(f"{spec.label()} row {i}: {e} (column {spec.answer!r}, answer_type={spec.answer_type})")
        question = " ".join(str(row[c]).strip() for c in qcols if row[c] is not None)
        if not question:
            raise TaskError(f"{spec.label()} row {i}: empty question (columns {', '.join(qcols)})")
        problems.append(
            Problem.make(
                task=spec.name,
                question=question,
                gold=gold,
                gold_text=str(raw).strip(),
                source=source,
                source_id=str(row[spec.id]) if spec.id else str(i),
                license=spec.license,
            )
        )
    return problems
