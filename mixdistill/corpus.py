"""Corpus versions: verified generations in the registry -> mixed rows -> a registered, exported version.

A version is identified by the recipe's semver and fingerprinted by (selected request keys per config and split,
mixing policy, answer rule): rebuilding from the same registry gives the same fingerprint and byte-identical Parquet.
Registering a different selection under an existing name@version is refused.

Memory stays flat with the corpus size: candidates and audit rows stream from the registry in chunks
(`workspace.CHUNK_ROWS`) into a private DuckDB workspace, where the mix runs in SQL; the fingerprint, the corpus rows,
the Parquet files (one row group per chunk), the audit report's data and the plots are all read back in chunks or as
SQL aggregates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl

from mixdistill.errors import MixdistillError
from mixdistill.ids import canonical_json, content_hash
from mixdistill.mix import (
    CONFIG_FILTER, ROW_ORDER, Mixed, input_sql, load_candidates, mix_workspace, split_column,
)
from mixdistill.recipe import BuildRecipe
from mixdistill.registry import Registry
from mixdistill.schema import REJECTED, ROWS, arrow
from mixdistill.tasks import TASKS
from mixdistill.workspace import Workspace, registry_batches

CONFIGS = ("cot", "pot", "mixed")
SPLITS = ("train", "validation")


class CorpusError(MixdistillError):
    pass


@dataclass(frozen=True)
class CorpusVersion:
    corpus_id: str
    name: str
    version: str
    fingerprint: str
    stats: dict
    lineage: dict
    created: bool  # False when an identical version was already registered

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str]:
    """`name@1.2.0` -> (name, version)."""
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        raise CorpusError(f"corpus reference {ref!r} must look like name@version (e.g. svamp-md@0.1.0)")
    return name, version


def excluded_problems(reg: Registry, recipe: BuildRecipe) -> set[str]:
    """Problem ids of the evaluation splits (`mix.exclude`, or each built-in task's standard eval split)."""
    if recipe.mix.exclude == "auto":
        refs = [(t.task, s) for t in recipe.tasks if t.task for s in TASKS[t.task].eval_splits]
        for t in recipe.tasks:
            if (t.name, t.split_name) in refs:
                raise CorpusError(
                    f"recipe builds from {t.name}/{t.split_name}, the task's evaluation split; build from a training "
                    "split or set mix.exclude explicitly"
                )
    else:
        refs = [(t.name, t.split_name) for t in recipe.mix.exclude]
    if not refs:
        return set()
    found = reg.query(
        "SELECT problem_id FROM problem_splits WHERE (task, split) IN (SELECT * FROM (VALUES "
        + ", ".join("(?, ?)" for _ in refs) + "))",
        [x for ref in refs for x in ref],
    )
    return set(found["problem_id"])


def _recipe_scope(recipe: BuildRecipe) -> tuple[str, list]:
    """SQL predicate (on g = generations, t = teachers, s = problem_splits) for what a recipe covers."""
    tasks, task_params = _task_scope(recipe)
    teachers, teacher_params = _teacher_scope(recipe)
    return f"({tasks}) AND {teachers}", task_params + teacher_params


def _task_scope(recipe: BuildRecipe) -> tuple[str, list]:
    """The predicate on s = problem_splits: the recipe's tasks and splits."""
    return (" OR ".join("(s.task = ? AND s.split = ?)" for _ in recipe.tasks),
            [x for t in recipe.tasks for x in (t.name, t.split_name)])


def _teacher_scope(recipe: BuildRecipe) -> tuple[str, list]:
    """The predicate on g = generations, t = teachers: the recipe's teachers and modes."""
    labels = ", ".join("?" for _ in recipe.teachers)
    modes = ", ".join("?" for _ in recipe.modes)
    return (f"t.name IN ({labels}) AND g.mode IN ({modes})",
            [t.label for t in recipe.teachers] + list(recipe.modes))


def _scoped_generations(recipe: BuildRecipe, judged: str) -> tuple[str, list]:
    """FROM and WHERE of the recipe's generations (each once) with their problem, teacher and verdict `judged`
    (a query with a `?` for the rule): streamed by joins, with no DISTINCT or window over the wide text columns
    (a problem in several of the recipe's splits is matched by a semi join)."""
    tasks, task_params = _task_scope(recipe)
    teachers, teacher_params = _teacher_scope(recipe)
    return (f"""{_RATIONALE_FROM} {judged}
        WHERE {teachers} AND g.problem_id IN (SELECT problem_id FROM problem_splits s WHERE {tasks})""",
            [recipe.rule, *teacher_params, *task_params])


_RATIONALE_SELECT = """
    g.request_key, g.problem_id, p.task, p.source_id, p.question, g.mode, t.name AS teacher, g.prompt_id,
    g.response_text, g.reasoning_text, e.program, v.extracted AS answer, p.gold_text AS gold,
    v.rule || '@' || v.rule_version AS rule, p.source, p.license
"""
# e: a PoT generation's latest execution, which holds the program `verify` ran (schema 11 on)
_RATIONALE_FROM = """
    generations g
    JOIN teachers t USING (teacher_id)
    JOIN problems p ON p.problem_id = g.problem_id
    LEFT JOIN executions e ON e.request_key = g.request_key AND e.latest
"""


def _program(text: str | None, executed: str | None) -> str | None:
    """A PoT response's program: the one its execution ran, or (executions stored before schema 11) extracted."""
    from mixdistill.verify.programs import extract_program

    return executed if executed is not None else extract_program(text)


def _with_rationale(df: pl.DataFrame, rationale: str = "answer") -> pl.DataFrame:
    """The training target: the prose for CoT, the executed program for PoT; with `rationale: trace-and-answer`
    a reasoning teacher's trace before it (`mix.compose_rationale`). One bounded chunk at a time."""
    from mixdistill.mix import compose_rationale

    out = [
        compose_rationale(mode, (_program(text, program) or "") if mode == "pot" else (text or "").strip(), trace,
                          rationale)
        for mode, text, trace, program in zip(df["mode"], df["response_text"], df["reasoning_text"], df["program"])
    ]
    return (df.drop("response_text", "reasoning_text", "program")
            .with_columns(pl.Series("rationale", out, dtype=pl.String)))


def candidate_sql(recipe: BuildRecipe) -> tuple[str, list]:
    """The recipe's generations whose latest verdict under its rule (`registry.keys.LATEST`: the highest rule
    version, then the newest) is correct; an older version's `correct` does not outvote a newer one's rejection."""
    latest_correct = """JOIN (
            SELECT request_key, extracted, rule, rule_version FROM verdicts WHERE rule = ? AND latest AND correct
        ) v ON v.request_key = g.request_key"""
    body, params = _scoped_generations(recipe, latest_correct)
    return f"SELECT {_RATIONALE_SELECT} FROM {body} AND g.status = 'ok'", params


def rationale_chunks(reg: Registry, sql: str, params: list | dict, rationale: str):
    """A rationale query's rows in bounded chunks, each with its training target."""
    with reg.lock:
        for table in registry_batches(reg.con, sql, params):
            yield _with_rationale(pl.from_arrow(table), rationale)


def candidates(reg: Registry, recipe: BuildRecipe) -> pl.DataFrame:
    """Generations of this recipe judged correct under its rule (latest rule version), one row per rationale, as one
    frame (builds stream them into their workspace instead)."""
    frames = list(rationale_chunks(reg, *candidate_sql(recipe), recipe.mix.rationale))
    return pl.concat(frames) if frames else pl.DataFrame()


def teacher_mode_stats(reg: Registry, recipe: BuildRecipe) -> pl.DataFrame:
    """Per teacher x mode: generated, verified, correct, pass rate, cost (the card's main table)."""
    scope, params = _recipe_scope(recipe)
    return reg.query(
        f"""
        WITH scoped AS (
            SELECT DISTINCT g.request_key, g.mode, g.status, g.cost_usd, t.name AS teacher
            FROM generations g JOIN teachers t USING (teacher_id) JOIN problem_splits s USING (problem_id)
            WHERE {scope}
        ), judged AS (
            SELECT * FROM verdicts WHERE rule = ? AND latest
        )
        SELECT teacher, mode, count(*) AS generated, count(j.request_key) AS verified,
               count_if(j.correct) AS correct,
               round(count_if(j.correct) / nullif(count(j.request_key), 0), 4) AS pass_rate,
               round(coalesce(sum(cost_usd), 0), 6) AS cost_usd
        FROM scoped LEFT JOIN judged j USING (request_key)
        GROUP BY ALL ORDER BY teacher, mode
        """,
        [*params, recipe.rule],
    )


def fingerprint(mixed: Mixed, recipe: BuildRecipe, rule_versions: list[str]) -> str:
    """`content_hash({"rows": {config: {split: sorted request keys}}, "mix": policy, "rules": ...}, 32)`, with the
    same canonical JSON bytes streamed through SHA-256 a chunk of keys at a time (no list of every key is held)."""
    digest = hashlib.sha256()
    put = lambda text: digest.update(text.encode("utf-8"))  # noqa: E731
    put('{"mix":' + canonical_json(recipe.mix.model_dump(mode="json")) + ',"rows":{')
    for c, name in enumerate(sorted(CONFIG_FILTER)):
        put(("," if c else "") + canonical_json(name) + ":{")
        for s, split in enumerate(sorted(SPLITS)):
            put(("," if s else "") + canonical_json(split) + ":[")
            first = True
            sql = f"SELECT request_key FROM rows WHERE {mixed.where(name, split)} ORDER BY request_key"
            for table in mixed.ws.batches(sql):
                keys = table.column(0).to_pylist()
                if keys:
                    put(("" if first else ",") + canonical_json(keys)[1:-1])
                    first = False
            put("]")
        put("}")
    put('},"rules":' + canonical_json(sorted(rule_versions)) + "}")
    return digest.hexdigest()[:32]


def lineage(reg: Registry, recipe: BuildRecipe, mixed: Mixed) -> dict:
    """Where every row came from: teachers, prompts, rule versions, source datasets and their licenses, and how each
    teacher's rationales were obtained (`mixdistill.provenance`: an unknown license stops the build here)."""
    teachers = reg.query(
        "SELECT name, provider, model, base_url FROM teachers WHERE name IN (SELECT unnest(?)) ORDER BY name",
        [sorted({t.label for t in recipe.teachers})],
    )
    return {
        "tasks": [{"task": t.name, "split": t.split_name} for t in recipe.tasks],
        "sources": kept_sources(mixed),
        "teachers": teachers.to_dicts(),
        "prompt_ids": [r[0] for r in mixed.ws.execute("SELECT DISTINCT prompt_id FROM rows ORDER BY 1")],
        "rules": [r[0] for r in mixed.ws.execute("SELECT DISTINCT rule FROM rows ORDER BY 1")],
        "provenance": provenance(reg, recipe, mixed),
    }


def kept_sources(mixed: Mixed) -> list[dict]:
    """(task, source, license) of the problems with rows."""
    return mixed.ws.query("SELECT DISTINCT task, source, license FROM rows ORDER BY ALL").to_dicts()


def provenance(reg: Registry, recipe: BuildRecipe, mixed: Mixed) -> dict:
    from mixdistill.provenance import describe

    kept = dict(mixed.ws.execute("SELECT teacher, count(*) FROM rows GROUP BY teacher"))
    return describe(reg, recipe, kept, kept_sources(mixed), *_recipe_scope(recipe))


def mix_recipe(reg: Registry, recipe: BuildRecipe) -> Mixed:
    """The recipe's candidates streamed from the registry into a new workspace, and mixed there."""
    ws = Workspace()
    try:
        chunks = rationale_chunks(reg, *candidate_sql(recipe), recipe.mix.rationale)
        load_candidates(ws, chunks, excluded_problems(reg, recipe))
        return mix_workspace(ws, recipe.mix)
    except BaseException:
        ws.close()
        raise


def build_version(reg: Registry, recipe: BuildRecipe, inputs: str | None = None,
                  mix: Callable[[Registry, BuildRecipe], Mixed] = mix_recipe) -> tuple[CorpusVersion, Mixed]:
    """Mix the recipe's verified generations (with `mix`: `mix_recipe`, or `remix.mix_for_build`, which starts from
    the parent version) and register the result as `name@version` (idempotent), with the input fingerprint it was
    made from (`incremental.input_fingerprint`, which a later re-mix checks). The caller closes the returned rows
    (`with mixed:`) once exported."""
    mixed = mix(reg, recipe)
    try:
        return _register(reg, recipe, mixed, inputs), mixed
    except BaseException:
        mixed.ws.close()
        raise


def _register(reg: Registry, recipe: BuildRecipe, mixed: Mixed, inputs: str | None) -> CorpusVersion:
    mix_stats = mixed.stats
    if not mix_stats["rows"]["mixed"]:
        raise CorpusError(
            f"{recipe.name}@{recipe.version}: no verified rationales to publish "
            f"({mix_stats['candidates']} correct candidates, {mix_stats['dropped_contamination']} excluded as "
            "evaluation problems)"
        )
    for mode in recipe.modes:
        if not mix_stats["rows"][mode]:
            raise CorpusError(f"{recipe.name}@{recipe.version}: config {mode!r} has no verified rows")
    rules = [r[0] for r in mixed.ws.execute("SELECT rule FROM cand_rules ORDER BY 1")]
    fp = fingerprint(mixed, recipe, rules)
    stats = {
        "mix": mix_stats,
        "rows": {n: {s: mixed.count(n, s) for s in SPLITS} for n in CONFIGS},
        "problems": mixed.ws.scalar("SELECT count(DISTINCT problem_id) FROM rows"),
        "teacher_mode": teacher_mode_stats(reg, recipe).to_dicts(),
        "inputs": inputs,
    }
    info = lineage(reg, recipe, mixed)
    corpus_id = content_hash({"name": recipe.name, "version": recipe.version})
    existing = reg.query("SELECT fingerprint FROM corpora WHERE corpus_id = ?", [corpus_id])
    if existing.height:
        if existing["fingerprint"][0] != fp:
            raise CorpusError(
                f"corpus {recipe.name}@{recipe.version} already exists with different content "
                f"(fingerprint {existing['fingerprint'][0][:12]} vs {fp[:12]}); bump `version` in the recipe"
            )
        return CorpusVersion(corpus_id, recipe.name, recipe.version, fp, stats, info, created=False)
    parent = reg.scalar(
        "SELECT version FROM corpora WHERE name = ? ORDER BY created_at DESC LIMIT 1", [recipe.name]
    )
    with reg.transaction():
        reg.insert("corpora", [{
            "corpus_id": corpus_id, "name": recipe.name, "version": recipe.version, "fingerprint": fp,
            "recipe": canonical_json(recipe.model_dump(mode="json")), "lineage": canonical_json(info),
            "stats": json.dumps(stats, default=str), "parent": parent,  # key order = pipeline order
        }])
        for name in CONFIGS:
            columns = (f"'{name}' AS config, split, id AS row_id, request_key, problem_id, "
                       f"'{corpus_id}' AS corpus_id")
            reg.append("corpus_rows", mixed.ws.stream(mixed.sql(columns, name)))  # a new version: none is stored
    return CorpusVersion(corpus_id, recipe.name, recipe.version, fp, stats, info, created=True)


def load_version(reg: Registry, ref: str) -> dict:
    """The registry record of name@version, with its JSON columns decoded."""
    name, version = parse_ref(ref)
    found = reg.query("SELECT * FROM corpora WHERE name = ? AND version = ?", [name, version])
    if found.is_empty():
        known = reg.query("SELECT version FROM corpora WHERE name = ? ORDER BY created_at", [name])["version"].to_list()
        hint = f"; versions of {name}: {', '.join(known)}" if known else "; `mixdistill corpora` lists them"
        raise CorpusError(f"corpus {ref} does not exist{hint}")
    row = found.to_dicts()[0]
    for key in ("recipe", "lineage", "stats"):
        row[key] = json.loads(row[key]) if row[key] else {}
    return row


def export_path(root: Path, name: str, version: str) -> Path:
    return root / name / version


ROW_GROUP_ROWS = 50_000  # Parquet row group: fixed, whatever the chunk size of the work before it


def write_parquet(mixed: Mixed, out: Path) -> dict[str, dict[str, str]]:
    """One Parquet file per config and split (`<config>/<split>.parquet`); returns the Hub `data_files` mapping.

    Written with fixed settings and sorted rows, so the same selection always gives the same bytes.
    """
    files: dict[str, dict[str, str]] = {}
    columns = ", ".join(f'"{c.name}"' for c in ROWS)
    for name in CONFIGS:
        for split in SPLITS:
            if not mixed.count(name, split):
                continue
            rel = f"{name}/{split}.parquet"
            _write_table(mixed.ws, mixed.sql(columns, name, split), arrow(ROWS), out / rel)
            files.setdefault(name, {})[split] = rel
    return files


def _write_table(ws: Workspace, sql: str, schema, path: Path) -> None:
    """The rows of `sql` as Parquet in the given Arrow schema (`mixdistill.schema`), with fixed settings and row
    groups of `ROW_GROUP_ROWS`, streamed one row group at a time: same rows, same bytes."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema, compression="zstd", compression_level=9, write_statistics=True) as writer:
        for table in ws.batches(sql, rows=ROW_GROUP_ROWS):
            writer.write_table(table.cast(schema), row_group_size=ROW_GROUP_ROWS)


def version_tag(version: str) -> str:
    return f"v{version}"


def card_context(record: dict, data_files: dict, plots: list, repo_id: str, recipe_yaml: str = "") -> dict:
    """Everything the card and report templates use, from a `load_version` record."""
    from mixdistill.cards import size_category

    stats = record["stats"]
    prov = record["lineage"]["provenance"]
    return {
        "name": record["name"], "version": record["version"], "fingerprint": record["fingerprint"],
        "description": record["recipe"].get("description", ""), "recipe": record["recipe"],
        "recipe_yaml": recipe_yaml, "built": str(record["created_at"])[:19],
        "stats": stats, "lineage": record["lineage"], "provenance": prov, "data_files": data_files, "plots": plots,
        "license": prov["license"], "columns": ROWS, "rejected_columns": REJECTED,
        "size_category": size_category(stats["rows"]["mixed"]["train"] + stats["rows"]["mixed"]["validation"]),
        "repo_id": repo_id, "tag": version_tag(record["version"]), "mixdistill_version": _package_version(),
    }


def _package_version() -> str:
    from mixdistill import __version__

    return __version__


def stored_recipe(record: dict) -> BuildRecipe:
    return BuildRecipe.model_validate(record["recipe"])


def recipe_yaml(record: dict) -> str:
    """The recipe as registered (every default spelled out), with this machine's data and home folders written as
    `${MIXDISTILL_DATA}` / `${MIXDISTILL_HOME}` so that the published file names no local path."""
    import yaml

    from mixdistill import settings

    text = yaml.safe_dump(record["recipe"], sort_keys=False, allow_unicode=True, width=100)
    for var, folder in ((settings.DATA_ENV, settings.data_dir()), (settings.HOME_ENV, settings.default_home())):
        text = text.replace(str(folder.resolve()), "${%s}" % var).replace(str(folder), "${%s}" % var)
    return f"# mixdistill build recipe of {record['name']}@{record['version']} (as registered, defaults included)\n{text}"


def audit_rows(reg: Registry, recipe: BuildRecipe, mixed: Mixed) -> None:
    """Workspace table `audit`: every rationale the recipe's teachers wrote for its problems, kept or not, with its
    verdict and execution, in the report's order (`_pos`).

    `reason` says why a rationale is absent from the corpus: the verdict's reason (`wrong-answer`, `no-answer`, an
    execution status, ...), `generation-<status>`, `unverified`, `evaluation-split` (a problem the contamination
    guard holds out) or `not-selected` (correct, but a duplicate, over `k_per_mode`, balanced away or over a quota);
    kept rows say `kept`, and are in the split the corpus put them in.
    """
    latest = """LEFT JOIN (
            SELECT request_key, extracted, correct, reason, rule, rule_version FROM verdicts WHERE rule = ? AND latest
        ) j ON j.request_key = g.request_key"""
    body, params = _scoped_generations(recipe, latest)
    sql = f"""
        SELECT g.request_key, g.problem_id, p.task, p.source_id, p.question, g.mode, t.name AS teacher, g.prompt_id,
               g.response_text, e.program, g.status, g.error, p.gold_text AS gold, j.extracted AS answer, j.correct,
               j.reason AS verdict_reason, j.rule || '@' || j.rule_version AS rule, e.status AS execution,
               nullif(concat_ws(': ', e.error_class, e.error_message), '') AS exec_error
        FROM {body}
        """
    ws = mixed.ws
    ws.execute("DROP TABLE IF EXISTS _audit_in; DROP TABLE IF EXISTS audit; DROP TABLE IF EXISTS excluded")
    ws.append("excluded", pl.DataFrame({"problem_id": sorted(excluded_problems(reg, recipe))},
                                       schema={"problem_id": pl.String}))
    with reg.lock:
        for table in registry_batches(reg.con, sql, params):
            ws.append("_audit_in", _audit_rationale(pl.from_arrow(table)))
    ws.create_ordered("audit", "_audit_in", "s.task, s.source_id, s.mode, s.teacher, s.request_key", f"""s.*,
               o._kept AS kept,
               CASE WHEN o._kept THEN 'kept'
                    WHEN s.status <> 'ok' THEN 'generation-' || s.status
                    WHEN s.correct IS NULL THEN 'unverified'
                    WHEN s.correct THEN CASE WHEN s.problem_id IN (SELECT problem_id FROM excluded)
                                             THEN 'evaluation-split' ELSE 'not-selected' END
                    ELSE coalesce(nullif(s.verdict_reason, ''), 'wrong-answer') END AS reason,
               coalesce(o._kept_split, {split_column(recipe.mix, 's.problem_id')}) AS split,
               coalesce(s.exec_error, s.error) AS error_text""",
                        narrow="r.request_key IS NOT NULL AS _kept, r.split AS _kept_split",
                        join="LEFT JOIN rows r ON r.request_key = s.request_key")
    ws.execute("DROP TABLE _audit_in")


def _audit_rationale(df: pl.DataFrame) -> pl.DataFrame:
    """The audit's rationale of one chunk: a PoT response's program (or the response), a CoT response's text."""
    rationale = [
        ((_program(text, program) or text) if mode == "pot" else text or "").strip()
        for mode, text, program in zip(df["mode"], df["response_text"].fill_null(""), df["program"])
    ]
    return df.drop("program").with_columns(pl.Series("rationale", rationale, dtype=pl.String))


def write_rejected(ws: Workspace, out: Path) -> dict[str, str]:
    """`rejected/<split>.parquet`: every rationale of the scope that is not in the corpus, for SQL audits."""
    files = {}
    columns = ", ".join(
        {"response": "response_text AS response", "error": "error_text AS error"}.get(c.name, f'"{c.name}"')
        for c in REJECTED
    )
    for split in SPLITS:
        where = f"NOT kept AND split = '{split}'"
        if not ws.scalar(f"SELECT count(*) FROM audit WHERE {where}"):
            continue
        rel = f"rejected/{split}.parquet"
        _write_table(ws, f"SELECT {columns} FROM audit WHERE {where}", arrow(REJECTED), out / rel)  # in _pos order
        files[split] = rel
    return files


def export_version(reg: Registry, ref: str, mixed: Mixed, out: Path, repo_id: str | None = None) -> Path:
    """Write a version's Parquet files (kept and rejected), recipe, card (README.md), plots and audit report."""
    from mixdistill.cards import make_plots, render, write_report

    record = load_version(reg, ref)
    recipe = stored_recipe(record)
    if "provenance" not in record["lineage"]:  # a version registered before cards carried provenance
        record["lineage"]["provenance"] = provenance(reg, recipe, mixed)
    out.mkdir(parents=True, exist_ok=True)
    data_files = write_parquet(mixed, out)
    audit_rows(reg, recipe, mixed)
    rejected = write_rejected(mixed.ws, out)
    if rejected:
        data_files["rejected"] = rejected
    plots = make_plots(pl.DataFrame(record["stats"]["teacher_mode"]), mixed.ws)
    (out / "assets").mkdir(exist_ok=True)
    for plot in plots:
        (out / plot.path).write_bytes(plot.png)
    text = recipe_yaml(record)
    (out / "recipe.yaml").write_text(text, encoding="utf-8")
    context = card_context(record, data_files, plots, repo_id or f"YOUR_ORG/{record['name']}", text)
    (out / "README.md").write_text(render("dataset_card.md.j2", **context), encoding="utf-8")
    labels = [t["name"] for t in record["lineage"]["teachers"]]
    failures = reg.query(
        "SELECT * FROM audit_failures WHERE teacher IN (SELECT unnest(?)) AND coalesce(rule, ?) = ? AND outcome <> 'correct'",
        [labels, recipe.rule, recipe.rule],
    )
    write_report(out / "report.html", context, failures.to_dicts(), mixed.ws)
    return out


def version_selection(reg: Registry, ref: str) -> Mixed:
    """A registered version's rows rebuilt from the registry alone (same rows, same order as at build time), in a
    new workspace; the caller closes it (`with`)."""
    record = load_version(reg, ref)
    sql = f"""
        SELECT cr.config, cr.split, cr.row_id AS id, {_RATIONALE_SELECT}
        FROM corpus_rows cr
        JOIN {_RATIONALE_FROM} ON g.request_key = cr.request_key
        JOIN (  -- of a row's verdicts under the version's rule versions, the one its build read (the latest then)
            SELECT request_key, extracted, rule, rule_version FROM verdicts
            WHERE rule || '@' || rule_version IN (SELECT unnest($rules)) AND request_key IN (
                SELECT request_key FROM corpus_rows WHERE corpus_id = $corpus AND config = 'mixed')
            QUALIFY row_number() OVER (PARTITION BY request_key ORDER BY rule_version DESC, created_at DESC) = 1
        ) v ON v.request_key = g.request_key
        WHERE cr.corpus_id = $corpus AND cr.config = 'mixed'
        """
    ws = Workspace()
    try:
        rationale = record["recipe"].get("mix", {}).get("rationale", "answer")
        params = {"rules": record["lineage"]["rules"], "corpus": record["corpus_id"]}
        for chunk in rationale_chunks(reg, sql, params, rationale):
            ws.append("_stored", chunk.with_columns(_i=pl.col("id").str.split("-").list.last().cast(pl.Int64)))
        ws.create_ordered("rows", "_stored", ROW_ORDER, f"s.* EXCLUDE (config), {input_sql()} AS input")
        ws.execute("DROP TABLE _stored")
        mixed = Mixed(ws, record["stats"].get("mix", {}))
    except BaseException:
        ws.close()
        raise
    return mixed


def version_frames(reg: Registry, ref: str) -> dict[str, pl.DataFrame]:
    """A registered version's rows per config, rebuilt from the registry alone, as frames (for training and the
    Python API; exports stream them from `version_selection`)."""
    with version_selection(reg, ref) as mixed:
        return {name: mixed[name] for name in CONFIGS}


def version_rows(reg: Registry, ref: str) -> pl.DataFrame:
    """(config, split, row_id, request_key) of a registered version, for `diff`."""
    record = load_version(reg, ref)
    return reg.query(
        "SELECT config, split, row_id, request_key FROM corpus_rows WHERE corpus_id = ? ORDER BY ALL",
        [record["corpus_id"]],
    )


def _flatten(value, prefix: str = "") -> dict:
    """{"mix": {"seed": 0}} -> {"mix.seed": 0}: a diff names the setting that changed, not its whole section."""
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def diff_versions(reg: Registry, a: str, b: str) -> dict:
    """What changed between two versions: rows added/removed per config and split, and recipe settings changed."""
    ra, rb = load_version(reg, a), load_version(reg, b)
    rows_a, rows_b = version_rows(reg, a), version_rows(reg, b)
    counts = []
    for config in CONFIGS:
        for split in SPLITS:
            ka = set(rows_a.filter((pl.col("config") == config) & (pl.col("split") == split))["request_key"])
            kb = set(rows_b.filter((pl.col("config") == config) & (pl.col("split") == split))["request_key"])
            counts.append({"config": config, "split": split, a: len(ka), b: len(kb),
                           "added": len(kb - ka), "removed": len(ka - kb), "kept": len(ka & kb)})
    fa, fb = _flatten(ra["recipe"]), _flatten(rb["recipe"])
    changed = {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if k != "version" and fa.get(k) != fb.get(k)}
    return {"rows": counts, "recipe_changes": changed,
            "fingerprints": (ra["fingerprint"], rb["fingerprint"])}
