"""Incremental re-mix: a version that adds teachers to its parent's recipe mixes only the problems they touched.

Every mixing step but the teacher quotas is a function of one problem's candidates: the contamination guard and the
length limit of each row, duplicates, ranking and `k_per_mode` within (problem, mode), balance within a problem, the
validation split by problem id. So when the parent version's inputs are still exactly as they were when it was built
(its recorded input fingerprint, `mixdistill.incremental`, equals the registry's now) and the new recipe only adds
teachers, a problem none of the new teachers has a correct rationale for gets the rows the parent chose for it. Only
the *touched* problems' candidates are read, prepared (normalised, counted) and mixed again; the parent's rows of
the others are read back by key, with their texts, and none of their rejected candidates is read at all.

The drop counts of the card are sums over problems, so they are the parent's, less the parent's own teachers' counts
on the touched problems (mixed once more, without the new teachers), plus those of the new mix. The result is the
version a full mix would register: same rows, same order, same fingerprint and statistics (tests compare the two).
Where the policy does not allow it (teacher quotas cap shares of the whole corpus), the parent's inputs changed, the
recipe differs in anything but its teachers, or the new teachers touch most problems, the full mix runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from mixdistill.corpus import (
    candidate_sql, excluded_problems, load_version, mix_recipe, rationale_chunks, stored_recipe,
)
from mixdistill.incremental import input_fingerprint
from mixdistill.mix import CONFIG_FILTER, Mixed, approx_tokens, load_candidates, select, stable_hash, to_rows
from mixdistill.recipe import BuildRecipe
from mixdistill.registry import Registry
from mixdistill.workspace import Workspace, registered

MOST = 0.5  # touched share of the parent's problems beyond which a full mix is cheaper than mixing them twice
_UNCHANGED = ("version", "description", "teachers")  # recipe fields a re-mix may differ in (teachers: only added)


@dataclass(frozen=True)
class Base:
    """The parent version an incremental mix starts from."""

    corpus_id: str
    ref: str  # name@version
    stats: dict  # its mix statistics
    added: list[str]  # labels of the teachers the new recipe adds


def remix_base(reg: Registry, recipe: BuildRecipe) -> Base | None:
    """The newest version of `recipe.name` when the new recipe is it with teachers added, the policy mixes problem
    by problem and the parent's inputs are unchanged; None when a full mix is needed."""
    if recipe.mix.teacher_quotas:
        return None
    newest = reg.scalar("SELECT version FROM corpora WHERE name = ? AND version <> ? ORDER BY created_at DESC LIMIT 1",
                        [recipe.name, recipe.version])
    if newest is None:
        return None
    record = load_version(reg, f"{recipe.name}@{newest}")
    recorded = record["stats"].get("inputs")
    try:
        parent = stored_recipe(record)
    except ValueError:  # a recipe of an older schema: nothing to compare with
        return None
    ours, theirs = recipe.model_dump(mode="json"), parent.model_dump(mode="json")
    if recorded is None or any(ours[k] != theirs[k] for k in ours if k not in _UNCHANGED):
        return None
    specs = {t.label: t.model_dump(mode="json") for t in recipe.teachers}
    kept = {t.label: t.model_dump(mode="json") for t in parent.teachers}
    if any(specs.get(label) != spec for label, spec in kept.items()) or len(specs) == len(kept):
        return None
    if input_fingerprint(reg, parent) != recorded:
        return None
    return Base(record["corpus_id"], f"{recipe.name}@{newest}", record["stats"]["mix"], sorted(set(specs) - set(kept)))


def remix(reg: Registry, recipe: BuildRecipe, base: Base) -> Mixed | None:
    """The mix of `recipe` from `base` (`remix_base`) and the touched problems; None when they are most of the
    parent's problems (the caller mixes in full)."""
    added = recipe.model_copy(update={"teachers": [t for t in recipe.teachers if t.label in base.added]})
    sql, params = candidate_sql(added)
    with reg.lock:  # a temporary table of the registry's connection: its ids stay in DuckDB, spilling beyond its limit
        reg.con.execute(f"CREATE OR REPLACE TEMP TABLE _touched AS SELECT DISTINCT problem_id FROM ({sql})", params)
        try:
            touched = reg.scalar("SELECT count(*) FROM _touched")
            problems = reg.scalar("SELECT count(DISTINCT problem_id) FROM corpus_rows WHERE corpus_id = ? AND "
                                  "config = 'mixed'", [base.corpus_id])
            return _remix(reg, recipe, base, touched) if touched <= MOST * problems else None
        finally:
            reg.con.execute("DROP TABLE _touched")


def _remix(reg: Registry, recipe: BuildRecipe, base: Base, touched: int) -> Mixed:
    ws = Workspace()
    try:
        stats = _mix_touched(reg, ws, recipe, base)
        _add_kept(reg, ws, recipe, base)
        _candidate_rules(reg, ws, recipe)
        to_rows(ws, recipe.mix)
        mixed = Mixed(ws, stats, f"re-mixed from {base.ref}: the {touched:,} problems {', '.join(base.added)} wrote a "
                                 "correct rationale for, the others' rows kept")
        mixed.stats["rows"] = {name: mixed.count(name) for name in CONFIG_FILTER}
        return mixed
    except BaseException:
        ws.close()
        raise


def _mix_touched(reg: Registry, ws: Workspace, recipe: BuildRecipe, base: Base) -> dict:
    """Table `chosen` for the touched problems (all teachers), and the statistics of the whole version: the parent's,
    less its own teachers' on those problems, plus the new mix's."""
    sql, params = candidate_sql(recipe)
    touched = f"{sql} AND g.problem_id IN (SELECT problem_id FROM _touched)"
    load_candidates(ws, rationale_chunks(reg, touched, params, recipe.mix.rationale), excluded_problems(reg, recipe))
    ws.execute("CREATE TABLE _cand_all AS SELECT * FROM cand")
    ws.execute("DELETE FROM cand WHERE teacher IN (SELECT unnest(?))", [base.added])
    before = select(ws, recipe.mix)  # the parent's teachers alone, as the parent mixed these problems
    ws.execute("DROP TABLE chosen; DROP TABLE cand_rules; ALTER TABLE _cand_all RENAME TO cand")
    after = select(ws, recipe.mix)
    return {key: base.stats[key] - before[key] + after[key] for key in after}


def _add_kept(reg: Registry, ws: Workspace, recipe: BuildRecipe, base: Base) -> None:
    """The parent's rows of the problems no new teacher touched, read back by key into `chosen` with the columns a
    mix gives them (their position `_i` is the last part of their row id)."""
    sql, params = candidate_sql(recipe)
    kept = f"""SELECT c.*, split_part(r.row_id, '-', -1)::BIGINT AS _i FROM ({sql}) c
        JOIN corpus_rows r ON r.request_key = c.request_key AND r.corpus_id = ? AND r.config = 'mixed'
        WHERE c.problem_id NOT IN (SELECT problem_id FROM _touched)"""
    for chunk in rationale_chunks(reg, kept, [*params, base.corpus_id], recipe.mix.rationale):
        with registered(ws.con, "_kept", chunk.with_columns(approx_tokens().alias("_tokens"))):
            ws.execute(f"INSERT INTO chosen BY NAME SELECT *, {stable_hash(f'rank:{recipe.mix.seed}', 'request_key')} "
                       "AS _rank FROM _kept")


def _candidate_rules(reg: Registry, ws: Workspace, recipe: BuildRecipe) -> None:
    """Table `cand_rules`: the rule versions of every candidate of the recipe (the fingerprint's), in SQL alone."""
    sql, params = candidate_sql(recipe)
    rules = reg.con.sql(f"SELECT DISTINCT rule FROM ({sql})", params=params).pl()
    ws.execute("DROP TABLE IF EXISTS cand_rules")
    ws.append("cand_rules", rules if rules.height else pl.DataFrame(schema={"rule": pl.String}))


def mix_for_build(reg: Registry, recipe: BuildRecipe) -> Mixed:
    """The mix a build registers: incremental from the parent version where that gives the same rows, else full."""
    base = remix_base(reg, recipe)
    mixed = remix(reg, recipe, base) if base is not None else None
    return mixed if mixed is not None else mix_recipe(reg, recipe)
