"""What `mixdistill sql` lets a query do: read the registry, nothing else.

Two layers: the connection is opened with `enable_external_access` off and the configuration locked (no file outside
the registry is read or written, no extension installed or loaded), and statements that only make sense to write
(COPY, EXPORT, ATTACH, INSTALL, LOAD) are refused up front with one line, using DuckDB's own parser; writes to
the registry itself meet the read-only connection's own one-line refusal.
"""

from __future__ import annotations

import duckdb

from mixdistill.errors import MixdistillError

# Statements that reach outside the registry (writes to it are refused by the read-only connection itself).
REFUSED = {"COPY": "COPY", "EXPORT": "EXPORT", "ATTACH": "ATTACH", "DETACH": "DETACH", "LOAD": "INSTALL/LOAD",
           "EXTENSION": "extension", "COPY_DATABASE": "COPY FROM DATABASE"}


def refuse_side_effects(query: str) -> None:
    """Raise a one-line error for any statement that is not a read (the database's own syntax errors pass through)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error:
        return  # let the query itself report the syntax error, with DuckDB's message
    if not statements:
        raise MixdistillError("sql: the query is empty")
    for st in statements:
        kind = st.type.name
        if kind in REFUSED:
            raise MixdistillError(
                f"sql: {REFUSED[kind]} statements are refused: `mixdistill sql` only reads the registry "
                "(write results with --format csv|json|parquet --output FILE)"
            )
