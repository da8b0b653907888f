"""The one schema of a corpus row, written once: the export's Parquet, the `datasets` builder's features and the card's
column table are all derived from `ROWS` (so `concatenate_datasets` of a built and a downloaded corpus works).

Every column is a plain UTF-8 string (`mode` too: a ClassLabel would make the builder and the Parquet disagree).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    meaning: str


ROWS: tuple[Column, ...] = (
    Column("id", "`task-source_id-mode-n`, unique within a config"),
    Column("problem_id", "content hash of (task, source, source id): the same problem has the same id in every corpus"),
    Column("task", "the benchmark (or custom task) the problem comes from"),
    Column("question", "the problem text"),
    Column("mode", "`cot` or `pot`"),
    Column("input", "what the student sees: the mode prefix (`[CoT]` / `[PoT]`), a space, the question"),
    Column("rationale", "the target: CoT prose ending in \"The answer is X\", or a Python program that sets `ans`"),
    Column("answer", "the answer extracted from the rationale (for PoT: the program's result)"),
    Column("gold", "the gold answer of the problem"),
    Column("teacher", "the teacher that wrote the rationale (its label in the recipe and the card)"),
    Column("prompt_id", "content hash of the prompt it was asked with (template + exemplars)"),
    Column("rule", "the answer rule that judged it correct, as `name@version`"),
    Column("request_key", "key of the teacher call in the build registry (lineage)"),
)
COLUMNS: list[str] = [c.name for c in ROWS]

# Rejected rationales (`rejected/<split>.parquet`): the row columns that exist before mixing, plus the verdict.
REJECTED: tuple[Column, ...] = (
    Column("request_key", "key of the teacher call in the build registry"),
    Column("problem_id", "content hash of (task, source, source id)"),
    Column("task", "the benchmark the problem comes from"),
    Column("source_id", "the problem's id in its source"),
    Column("question", "the problem text"),
    Column("mode", "`cot` or `pot`"),
    Column("teacher", "the teacher that wrote it"),
    Column("prompt_id", "content hash of the prompt"),
    Column("response", "the teacher's full answer text"),
    Column("answer", "the answer extracted (CoT) or computed by the program (PoT); empty when none"),
    Column("gold", "the gold answer"),
    Column("reason", "why it was rejected: the verdict reason (wrong-answer, no-answer, ...) or generation-<status>"),
    Column("rule", "the answer rule that judged it, `name@version` (empty when it was never judged)"),
    Column("execution", "PoT: the sandbox status (ok, error, timeout, memory, forbidden, no-answer); CoT: empty"),
    Column("error", "PoT: the error class and message of a failed program; a failed call: its error"),
)


def arrow(columns: tuple[Column, ...] = ROWS):
    """The Arrow schema of the corpus rows (or of `REJECTED`); pyarrow is imported only when a file is written."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, pa.string(), nullable=True) for c in columns])


def features():
    """The rows' schema as `datasets.Features` (for builders; datasets is imported only here)."""
    import datasets

    return datasets.Features.from_arrow_schema(arrow())
