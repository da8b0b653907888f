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
    "batch_requests": ("batch_id", "request_key"),
}

# The one row of a key's history that the audit views read (`latest_verdicts`, `latest_executions`): the rows of a
# partition ranked by the order, first wins. Stored as a `latest` flag (migration m009) that the writers keep
# (`Registry.refresh_latest`), so a view filters 10^7 rows instead of ranking them with a window. (partition, order)
LATEST: dict[str, tuple[str, str]] = {
    "verdicts": ("request_key, rule", "rule_version DESC, created_at DESC"),
    "executions": ("request_key", "created_at DESC, sandbox_version DESC"),
}
