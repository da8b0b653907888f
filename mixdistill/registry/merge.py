"""Fold shard registries into one.

Every stored row is keyed by what defines it (`request_key`, `problem_id`, `(request_key, rule, rule_version)`...),
so a merge is a union by key (the primary key, or `registry.keys` for the tables that grow with the corpus): a row whose key the target already holds with the same content is skipped
(merging a shard twice changes nothing), and a key held with *different* content is a conflict, reported with its
table and key, after which nothing at all has been written. Bookkeeping columns that legitimately differ between two
machines that stored the same thing (timestamps, run ids, latencies) are not content.

The whole merge of one shard is one transaction, so an interrupted merge leaves the target as it was. DuckDB copies
the rows itself (ATTACH ... READ_ONLY, INSERT ... SELECT), so nothing is held in Python memory whatever the size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from mixdistill.errors import RegistryError
from mixdistill.registry import SCHEMA_VERSION, Registry
from mixdistill.registry.keys import KEYS, LATEST

# Columns that say when/where/how fast something was stored, not what: two shards that stored the same row differ here.
# `latest` is derived from the rest (`registry.keys.LATEST`): recomputed for the merged generations.
BOOKKEEPING = frozenset({"created_at", "updated_at", "started_at", "finished_at", "run_id", "batch_id",
                         "latency_s", "runtime_s", "latest"})
_SRC = "mixdistill_shard"


@dataclass
class MergeReport:
    source: Path
    added: dict[str, int] = field(default_factory=dict)  # table -> new rows

    @property
    def total(self) -> int:
        return sum(self.added.values())


def merge_registries(target: Registry, sources: list[Path]) -> list[MergeReport]:
    """Merge each source registry into `target`, one transaction per source, in order."""
    check_sources(target.path, sources)
    return [_merge_one(target, Path(s)) for s in sources]


def check_sources(target: Path, sources: list[Path]) -> None:
    """Every source is a file other than the target (`registry merge` checks before it opens, or creates, the target)."""
    for s in sources:
        if not Path(s).is_file():
            raise RegistryError(f"no registry at {s}")
        if Path(s).resolve() == Path(target).resolve():
            raise RegistryError(f"{s} is the target registry itself; merge shards into another file")


def _merge_one(target: Registry, source: Path) -> MergeReport:
    con = target.con
    with target.lock:
        try:
            con.execute(f"ATTACH '{_quote(source)}' AS {_SRC} (READ_ONLY)")
        except duckdb.Error as e:
            raise RegistryError(f"cannot open shard registry {source}: {str(e).splitlines()[0]}") from None
        try:
            _check_schema(con, source)
            _check_same_build(con, source, target.path)
            report = MergeReport(source)
            with target.transaction():
                for table, key in _tables(con):
                    report.added[table] = _merge_table(con, source, table, key)
                for table in LATEST:
                    if report.added.get(table):
                        target.refresh_latest(table, where=f"request_key IN (SELECT request_key FROM {_SRC}.{table})")
            return report
        finally:
            con.execute(f"DETACH {_SRC}")


def _check_schema(con: duckdb.DuckDBPyConnection, source: Path) -> None:
    has = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = 'schema_migrations'", [_SRC]
    ).fetchone()[0]
    if not has:
        raise RegistryError(f"{source} is not a mixdistill registry (no schema_migrations); nothing merged")
    version = con.execute(f"SELECT coalesce(max(version), 0) FROM {_SRC}.schema_migrations").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise RegistryError(
            f"{source} has schema version {version}, the target {SCHEMA_VERSION}: open the shard once for writing "
            f"with the same mixdistill to migrate it, then merge; nothing merged"
        )


def _shard_builds(con: duckdb.DuckDBPyConnection, database: str) -> set[tuple[str, str]]:
    """(recipe, shard count) of the sharded generation runs a registry holds (run names end "shard I/N")."""
    rows = con.execute(
        f"SELECT DISTINCT recipe, regexp_extract(name, ' shard \\d+/(\\d+)$', 1) FROM {database}.runs "
        "WHERE kind = 'generate' AND regexp_matches(name, ' shard \\d+/\\d+$')"
    ).fetchall()
    return {(r or "", n) for r, n in rows}


def _check_same_build(con: duckdb.DuckDBPyConnection, source: Path, target: Path) -> None:
    """Shards of one build share its recipe and shard count; folding in a shard of another build is refused."""
    theirs, ours = _shard_builds(con, _SRC), _shard_builds(con, "main")
    if theirs and ours and theirs != ours:
        counts = sorted({n for _, n in theirs | ours})
        why = f"shard counts {'/'.join(counts)}" if len(counts) > 1 else "recipes"
        raise RegistryError(
            f"{source} and {target} hold shards of different builds (different {why}); nothing merged"
        )


def _tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, list[str]]]:
    """The target's base tables (but the migration log) with their key columns (primary key, or `KEYS` for the
    tables that have none), in name order."""
    rows = con.execute(
        "SELECT t.table_name, c.constraint_column_names FROM duckdb_tables() t "
        "LEFT JOIN duckdb_constraints() c ON c.database_name = t.database_name AND c.table_name = t.table_name "
        "AND c.constraint_type = 'PRIMARY KEY' "
        "WHERE t.database_name = current_database() AND t.schema_name = 'main' AND t.table_name <> 'schema_migrations' "
        "ORDER BY t.table_name"
    ).fetchall()
    return [(name, list(key or KEYS.get(name, []))) for name, key in rows]


def _merge_table(con: duckdb.DuckDBPyConnection, source: Path, table: str, key: list[str]) -> int:
    columns = [r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name = ? ORDER BY column_index", [table]).fetchall()]
    t, s = f'main."{table}"', f'{_SRC}."{table}"'
    if not key:  # no identity to merge by: add the rows not already present as they are
        return _count(con.execute(f"INSERT INTO {t} SELECT * FROM {s} EXCEPT SELECT * FROM {t}"))
    content = [c for c in columns if c not in BOOKKEEPING and c not in key]
    on = " AND ".join(f'a."{k}" = b."{k}"' for k in key)
    if content:
        differs = " OR ".join(f'a."{c}" IS DISTINCT FROM b."{c}"' for c in content)
        clash = con.execute(
            f"SELECT {', '.join(f'a.{_q(k)}' for k in key)} FROM {s} a JOIN {t} b ON {on} WHERE {differs} LIMIT 1"
        ).fetchone()
        if clash is not None:
            named = ", ".join(f"{k}={v!r}" for k, v in zip(key, clash))
            raise RegistryError(
                f"{source}: table {table} holds {named} with other content than the target; nothing merged"
            )
    cols = ", ".join(_q(c) for c in columns)
    return _count(con.execute(
        f"INSERT INTO {t} ({cols}) SELECT {', '.join(f'a.{_q(c)}' for c in columns)} FROM {s} a "
        f"WHERE NOT EXISTS (SELECT 1 FROM {t} b WHERE {on})"
    ))


def _count(cursor) -> int:
    row = cursor.fetchone()
    return int(row[0]) if row else 0


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
