"""The identity of each row of the tables that grow with the corpus, kept by the writers rather than by DuckDB.

These tables have no PRIMARY KEY (migration m008): DuckDB holds a key's ART index within the memory limit on every
insert, which 10^7 generations outgrow. A writer instead adds only rows whose key is not stored (one anti-join per
chunk of rows, `Registry.insert`), or, where it already knows that none is (a generation run looks up a chunk's
stored keys before sending it), appends them as they are. `registry merge` merges these tables by the same keys.
"""

from __future__ import annotations

KEYS: dict[str, tuple[str, ...]] = {
    "problems": ("problem_id",),
    "problem_splits": ("task", "split", "problem_id"),
    "generations": ("request_key",),
    "executions": ("request_key", "sandbox_version"),
    "verdicts": ("request_key", "rule", "rule_version"),
    "corpus_rows": ("corpus_id", "config", "row_id"),
}
