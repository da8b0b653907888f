"""Custom tasks: any Parquet / JSONL / JSON / CSV file or Hub dataset, mapped onto the problem schema by column names."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Iterator, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mixdistill.errors import TaskError
from mixdistill.settings import RecipePath
from mixdistill.tasks.base import Problem, parse_gold_bool, parse_gold_number

# Files read in chunks of rows, so a ten-million-row task is never one frame in memory: Parquet by polars' streaming
# scan (a row group at a time); JSONL and CSV CHUNK lines at a time, each chunk parsed by polars. (polars' scans of
# those grew the process by the file's size: +125 MB of peak RSS per 10^6 rows of `bench scale`'s task file.) A
# .json file (one document) and a Hub dataset are read whole and sliced.
_LINES = {".jsonl": pl.read_ndjson, ".ndjson": pl.read_ndjson, ".csv": pl.read_csv}
_SUFFIXES = (".parquet", *_LINES, ".json")
CHUNK = 50_000  # problems per chunk
INFER_ROWS = 100  # records a JSONL or CSV file's column types are inferred from (polars' default)


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


def _frames(spec: CustomTask) -> Iterator[pl.DataFrame]:
    """The task's rows, in frames of about CHUNK rows."""
    if spec.hub:
        import datasets

        try:
            ds = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.split, revision=spec.revision)
        except Exception as e:  # datasets raises many types; the user needs the id and the reason
            raise TaskError(f"cannot load {spec.label()}: {type(e).__name__}: {e}".splitlines()[0]) from None
        yield from pl.from_arrow(ds.data.table).iter_slices(CHUNK)
        return
    path = Path(spec.path)
    if not path.is_file():
        raise TaskError(f"custom task {spec.name!r}: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise TaskError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_SUFFIXES)}")
    try:
        if suffix == ".parquet":
            yield from pl.scan_parquet(path).collect_batches(chunk_size=CHUNK)
        elif suffix in _LINES:
            read, header = _LINES[suffix], suffix == ".csv"
            # the columns' types from the first INFER_ROWS records, as polars' scans infer them, for every chunk
            schema = read(next(_line_chunks(path, header, INFER_ROWS)), infer_schema_length=INFER_ROWS).schema
            for data in _line_chunks(path, header, CHUNK):
                yield read(data, schema=schema)
        else:
            yield from pl.read_json(path).iter_slices(CHUNK)
    except Exception as e:
        raise TaskError(f"{path}: cannot read as {path.suffix[1:]}: {e}".splitlines()[0]) from None


def _line_chunks(path: Path, header: bool, size: int) -> Iterator[bytes]:
    """The file's records `size` lines at a time (a few more where a CSV's quoted field holds a newline), each chunk
    after the header line when `header`; just the header (or nothing) for a file without records."""
    with open(path, "rb") as f:
        head = f.readline() if header else b""
        sent = False
        while lines := list(itertools.islice(f, size)):
            if header:  # a record ends where its quotes are balanced: a `""` inside a field counts twice
                odd = sum(line.count(b'"') for line in lines) % 2
                while odd and (more := f.readline()):
                    lines.append(more)
                    odd ^= more.count(b'"') % 2
            yield head + b"".join(lines)
            sent = True
        if not sent:
            yield head


def load(spec: CustomTask) -> list[Problem]:
    return [p for chunk in load_chunks(spec) for p in chunk]


def load_chunks(spec: CustomTask) -> Iterator[list[Problem]]:
    """The task's problems, CHUNK at a time, each row checked. A repeated id is found once the last row is read
    (the ids are kept as Arrow strings, not as Python objects); a caller that must not act on a bad file consumes
    every chunk first."""
    qcols = [spec.question] if isinstance(spec.question, str) else list(spec.question)
    mapping = [("question", c) for c in qcols] + [("answer", spec.answer)] + ([("id", spec.id)] if spec.id else [])
    parse = parse_gold_number if spec.answer_type == "number" else parse_gold_bool
    source = spec.source  # once: a property that parses the path (a second per 100,000 rows)
    start = 0
    with _ids() if spec.id else contextlib.nullcontext() as ids:
        for df in _frames(spec):
            if start == 0:
                for field, col in mapping:
                    if col not in df.columns:
                        raise TaskError(f"{spec.label()}: column {col!r} (mapped to '{field}') not found; columns: "
                                        f"{', '.join(df.columns)}")
            if df.height == 0:
                continue
            problems = _problems(spec, df, start, qcols, parse, source)
            if ids is not None:
                ids.append("ids", pl.DataFrame({"row": pl.int_range(start, start + df.height, eager=True),
                                                "id": df.get_column(spec.id).cast(pl.String).str.strip_chars()}))
            start += df.height
            yield problems
        if start == 0:
            raise TaskError(f"{spec.label()}: no rows (only a header, or an empty file): nothing to import")
        if ids is not None:
            _check_unique(spec, ids)


def _ids():
    """Where the ids read so far are kept for `_check_unique`: a DuckDB workspace whose ids spill to disk beyond
    `workspace.IDS_MEMORY` rather than grow the process."""
    from mixdistill.workspace import IDS_MEMORY, Workspace

    return Workspace(IDS_MEMORY)


def _check_unique(spec: CustomTask, ids) -> None:
    """The id is the problem's identity: a repeated one would merge rows silently. Found by a GROUP BY (which spills),
    so ten million ids are checked in bounded memory."""
    found = ids.execute("WITH twice AS (SELECT id, min(row) AS first FROM ids GROUP BY id HAVING count(*) > 1)"
                        " SELECT i.row, i.id, t.first FROM ids i JOIN twice t USING (id) WHERE i.row > t.first"
                        " ORDER BY i.row LIMIT 1")
    if found:
        (i, sid, first), = found
        raise TaskError(f"{spec.label()} row {i}: id {sid!r} repeats row {first} (column {spec.id!r})")


def _problems(spec: CustomTask, df: pl.DataFrame, start: int, qcols: list[str], parse, source: str) -> list[Problem]:
    problems = []
    for i, row in enumerate(df.iter_rows(named=True), start=start):
        if spec.id:
            sid = "" if row[spec.id] is None else str(row[spec.id]).strip()
            if not sid:
                raise TaskError(f"{spec.label()} row {i}: empty id (column {spec.id!r})")
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
