"""Corpus versions: verified generations in the registry -> mixed rows -> a registered, exported version.

A version is identified by the recipe's semver and fingerprinted by (selected request keys per config and split,
mixing policy, answer rule): rebuilding from the same registry gives the same fingerprint and byte-identical Parquet.
Registering a different selection under an existing name@version is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mixdistill.errors import MixdistillError
from mixdistill.ids import canonical_json, content_hash
from mixdistill.mix import input_column, mix
from mixdistill.recipe import BuildRecipe
from mixdistill.registry import Registry
from mixdistill.schema import REJECTED, ROWS, arrow
from mixdistill.tasks import TASKS

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
    tasks = " OR ".join("(s.task = ? AND s.split = ?)" for _ in recipe.tasks)
    labels = ", ".join("?" for _ in recipe.teachers)
    modes = ", ".join("?" for _ in recipe.modes)
    params = [x for t in recipe.tasks for x in (t.name, t.split_name)]
    params += [t.label for t in recipe.teachers] + list(recipe.modes)
    return f"({tasks}) AND t.name IN ({labels}) AND g.mode IN ({modes})", params


_RATIONALE_SELECT = """
    g.request_key, g.problem_id, p.task, p.source_id, p.question, g.mode, t.name AS teacher, g.prompt_id,
    g.response_text, g.reasoning_text, v.extracted AS answer, p.gold_text AS gold, v.rule || '@' || v.rule_version AS rule
"""
_RATIONALE_FROM = """
    generations g
    JOIN teachers t USING (teacher_id)
    JOIN problems p ON p.problem_id = g.problem_id
"""


def _with_rationale(df: pl.DataFrame, rationale: str = "answer") -> pl.DataFrame:
    """The training target: the prose for CoT, the extracted program for PoT; with `rationale: trace-and-answer`
    a reasoning teacher's trace before it (`mix.compose_rationale`)."""
    from mixdistill.mix import compose_rationale
    from mixdistill.verify.programs import extract_program

    out = [
        compose_rationale(mode, (extract_program(text) or "") if mode == "pot" else (text or "").strip(), trace, rationale)
        for mode, text, trace in zip(df["mode"], df["response_text"], df["reasoning_text"])
    ]
    return df.drop("response_text", "reasoning_text").with_columns(pl.Series("rationale", out, dtype=pl.String))


def candidates(reg: Registry, recipe: BuildRecipe) -> pl.DataFrame:
    """Generations of this recipe judged correct under its rule (latest rule version), one row per rationale."""
    scope, params = _recipe_scope(recipe)
    df = reg.query(
        f"""
        SELECT DISTINCT {_RATIONALE_SELECT}
        FROM {_RATIONALE_FROM}
        JOIN problem_splits s ON s.problem_id = g.problem_id
        JOIN verdicts v ON v.request_key = g.request_key AND v.rule = ?
        WHERE {scope} AND g.status = 'ok' AND v.correct
        QUALIFY row_number() OVER (PARTITION BY g.request_key ORDER BY v.created_at DESC, v.rule_version DESC) = 1
        """,
        [recipe.rule, *params],
    )
    return _with_rationale(df, recipe.mix.rationale)


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
            SELECT * FROM verdicts WHERE rule = ?
            QUALIFY row_number() OVER (PARTITION BY request_key ORDER BY created_at DESC, rule_version DESC) = 1
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


def fingerprint(configs: dict[str, pl.DataFrame], recipe: BuildRecipe, rule_versions: list[str]) -> str:
    keys = {
        name: {split: sorted(df.filter(pl.col("split") == split)["request_key"]) for split in SPLITS}
        for name, df in configs.items()
    }
    return content_hash({"rows": keys, "mix": recipe.mix.model_dump(mode="json"), "rules": sorted(rule_versions)}, 32)


def lineage(reg: Registry, recipe: BuildRecipe, rows: pl.DataFrame) -> dict:
    """Where every row came from: teachers, prompts, rule versions, source datasets and their licenses, and how each
    teacher's rationales were obtained (`mixdistill.provenance`: an unknown license stops the build here)."""
    sources = reg.query(
        "SELECT DISTINCT task, source, license FROM problems WHERE problem_id IN (SELECT unnest(?)) ORDER BY ALL",
        [sorted(set(rows["problem_id"]))],
    )
    teachers = reg.query(
        "SELECT name, provider, model, base_url FROM teachers WHERE name IN (SELECT unnest(?)) ORDER BY name",
        [sorted({t.label for t in recipe.teachers})],
    )
    from mixdistill.provenance import describe

    return {
        "tasks": [{"task": t.name, "split": t.split_name} for t in recipe.tasks],
        "sources": sources.to_dicts(),
        "teachers": teachers.to_dicts(),
        "prompt_ids": sorted(set(rows["prompt_id"])),
        "rules": sorted(set(rows["rule"])),
        "provenance": describe(reg, recipe, rows, *_recipe_scope(recipe)),
    }


def build_version(reg: Registry, recipe: BuildRecipe) -> tuple[CorpusVersion, dict[str, pl.DataFrame]]:
    """Mix the recipe's verified generations and register the result as `name@version` (idempotent)."""
    excluded = excluded_problems(reg, recipe)
    cands = candidates(reg, recipe)
    configs, mix_stats = mix(cands, recipe.mix, excluded)
    if configs["mixed"].is_empty():
        raise CorpusError(
            f"{recipe.name}@{recipe.version}: no verified rationales to publish "
            f"({cands.height} correct candidates, {mix_stats['dropped_contamination']} excluded as evaluation problems)"
        )
    for mode in recipe.modes:
        if configs[mode].is_empty():
            raise CorpusError(f"{recipe.name}@{recipe.version}: config {mode!r} has no verified rows")
    fp = fingerprint(configs, recipe, sorted(set(cands["rule"])))
    stats = {
        "mix": mix_stats,
        "rows": {n: {s: configs[n].filter(pl.col("split") == s).height for s in SPLITS} for n in CONFIGS},
        "problems": configs["mixed"]["problem_id"].n_unique(),
        "teacher_mode": teacher_mode_stats(reg, recipe).to_dicts(),
    }
    info = lineage(reg, recipe, configs["mixed"])
    corpus_id = content_hash({"name": recipe.name, "version": recipe.version})
    existing = reg.query("SELECT fingerprint FROM corpora WHERE corpus_id = ?", [corpus_id])
    if existing.height:
        if existing["fingerprint"][0] != fp:
            raise CorpusError(
                f"corpus {recipe.name}@{recipe.version} already exists with different content "
                f"(fingerprint {existing['fingerprint'][0][:12]} vs {fp[:12]}); bump `version` in the recipe"
            )
        version = CorpusVersion(corpus_id, recipe.name, recipe.version, fp, stats, info, created=False)
        return version, configs
    parent = reg.scalar(
        "SELECT version FROM corpora WHERE name = ? ORDER BY created_at DESC LIMIT 1", [recipe.name]
    )
    corpus_rows = pl.concat(
        [df.select(pl.lit(name).alias("config"), "split", pl.col("id").alias("row_id"), "request_key", "problem_id")
         for name, df in configs.items()]
    ).with_columns(pl.lit(corpus_id).alias("corpus_id"))
    with reg.transaction():
        reg.insert("corpora", [{
            "corpus_id": corpus_id, "name": recipe.name, "version": recipe.version, "fingerprint": fp,
            "recipe": canonical_json(recipe.model_dump(mode="json")), "lineage": canonical_json(info),
            "stats": json.dumps(stats, default=str), "parent": parent,  # key order = pipeline order
        }])
        reg.insert("corpus_rows", corpus_rows)
    return CorpusVersion(corpus_id, recipe.name, recipe.version, fp, stats, info, created=True), configs


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


def write_parquet(configs: dict[str, pl.DataFrame], out: Path) -> dict[str, dict[str, str]]:
    """One Parquet file per config and split (`<config>/<split>.parquet`); returns the Hub `data_files` mapping.

    Written with fixed settings and sorted rows, so the same selection always gives the same bytes.
    """
    files: dict[str, dict[str, str]] = {}
    for name, df in configs.items():
        for split in SPLITS:
            part = df.filter(pl.col("split") == split).drop("split")
            if part.is_empty():
                continue
            rel = f"{name}/{split}.parquet"
            _write_table(part, arrow(ROWS), out / rel)
            files.setdefault(name, {})[split] = rel
    return files


def _write_table(df: pl.DataFrame, schema, path: Path) -> None:
    """Parquet in the given Arrow schema (`mixdistill.schema`), with fixed settings: same rows, same bytes."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = df.select(schema.names).to_arrow().cast(schema)
    pq.write_table(table, path, compression="zstd", compression_level=9, row_group_size=50_000,
                   write_statistics=True)


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


def audit_rows(reg: Registry, recipe: BuildRecipe, kept: pl.DataFrame) -> pl.DataFrame:
    """Every rationale the recipe's teachers wrote for its problems, kept or not, with its verdict and execution.

    `kept` holds (request_key, split) of the version's rows. `reason` says why a rationale is absent from the corpus:
    the verdict's reason (`wrong-answer`, `no-answer`, an execution status, ...), `generation-<status>`,
    `unverified`, `evaluation-split` (a problem the contamination guard holds out) or `not-selected` (correct, but
    a duplicate, over `k_per_mode`, balanced away or over a quota); kept rows say `kept`.
    """
    from mixdistill.mix import assign_splits
    from mixdistill.verify.programs import extract_program

    scope, params = _recipe_scope(recipe)
    df = reg.query(
        f"""
        WITH scoped AS (
            SELECT DISTINCT g.request_key, g.problem_id, p.task, p.source_id, p.question, g.mode, t.name AS teacher,
                   g.prompt_id, g.response_text, g.status, g.error, p.gold_text AS gold
            FROM {_RATIONALE_FROM} JOIN problem_splits s ON s.problem_id = g.problem_id
            WHERE {scope}
        ), judged AS (
            SELECT * FROM verdicts WHERE rule = ?
            QUALIFY row_number() OVER (PARTITION BY request_key ORDER BY created_at DESC, rule_version DESC) = 1
        )
        SELECT sc.*, j.extracted AS answer, j.correct, j.reason AS verdict_reason,
               j.rule || '@' || j.rule_version AS rule, e.status AS execution,
               nullif(concat_ws(': ', e.error_class, e.error_message), '') AS exec_error
        FROM scoped sc LEFT JOIN judged j USING (request_key) LEFT JOIN latest_executions e USING (request_key)
        ORDER BY sc.task, sc.source_id, sc.mode, sc.teacher, sc.request_key
        """,
        [*params, recipe.rule],
    )
    excluded = excluded_problems(reg, recipe)
    kept_split = dict(kept.select("request_key", "split").iter_rows())
    reasons = []
    for key, status, correct, verdict, pid in df.select(
            "request_key", "status", "correct", "verdict_reason", "problem_id").iter_rows():
        if key in kept_split:
            reasons.append("kept")
        elif status != "ok":
            reasons.append(f"generation-{status}")
        elif correct is None:
            reasons.append("unverified")
        elif correct:
            reasons.append("evaluation-split" if pid in excluded else "not-selected")
        else:
            reasons.append(verdict or "wrong-answer")
    rationale = [
        ((extract_program(text) or text) if mode == "pot" else text or "").strip()
        for mode, text in zip(df["mode"], df["response_text"].fill_null(""))
    ]
    df = assign_splits(df, recipe.mix).with_columns(
        pl.Series("reason", reasons, dtype=pl.String),
        pl.Series("rationale", rationale, dtype=pl.String),
        pl.col("request_key").is_in(list(kept_split)).alias("kept"),
        pl.coalesce(pl.col("exec_error"), pl.col("error")).alias("error_text"),
    )
    if kept_split:  # kept rows are in the split the corpus put them in
        df = df.with_columns(pl.col("request_key").replace_strict(kept_split, default=pl.col("split"), return_dtype=pl.String).alias("split"))
    return df


def write_rejected(audit: pl.DataFrame, out: Path) -> dict[str, str]:
    """`rejected/<split>.parquet`: every rationale of the scope that is not in the corpus, for SQL audits."""
    files = {}
    rejected = audit.filter(~pl.col("kept")).rename({"response_text": "response"})
    rejected = rejected.with_columns(pl.col("error_text").alias("error"))
    for split in SPLITS:
        part = rejected.filter(pl.col("split") == split)
        if part.is_empty():
            continue
        rel = f"rejected/{split}.parquet"
        _write_table(part, arrow(REJECTED), out / rel)
        files[split] = rel
    return files


def export_version(reg: Registry, ref: str, configs: dict[str, pl.DataFrame], out: Path,
                   repo_id: str | None = None) -> Path:
    """Write a version's Parquet files (kept and rejected), recipe, card (README.md), plots and audit report."""
    from mixdistill.cards import make_plots, render, render_report

    record = load_version(reg, ref)
    recipe = stored_recipe(record)
    if "provenance" not in record["lineage"]:  # a version registered before cards carried provenance
        from mixdistill.provenance import describe

        record["lineage"]["provenance"] = describe(reg, recipe, configs["mixed"], *_recipe_scope(recipe))
    out.mkdir(parents=True, exist_ok=True)
    data_files = write_parquet(configs, out)
    audit = audit_rows(reg, recipe, configs["mixed"].select("request_key", "split"))
    rejected = write_rejected(audit, out)
    if rejected:
        data_files["rejected"] = rejected
    plots = make_plots(pl.DataFrame(record["stats"]["teacher_mode"]), configs["mixed"])
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
    (out / "report.html").write_text(render_report(context, failures.to_dicts(), audit), encoding="utf-8")
    return out


def version_frames(reg: Registry, ref: str) -> dict[str, pl.DataFrame]:
    """Rebuild a registered version's rows from the registry alone (same rows, same order as at build time)."""
    from mixdistill.mix import ROW_COLUMNS, sort_rows

    record = load_version(reg, ref)
    df = reg.query(
        f"""
        SELECT cr.config, cr.split, cr.row_id AS id, {_RATIONALE_SELECT}
        FROM corpus_rows cr
        JOIN {_RATIONALE_FROM} ON g.request_key = cr.request_key
        JOIN verdicts v ON v.request_key = g.request_key AND v.rule || '@' || v.rule_version IN (SELECT unnest(?))
        WHERE cr.corpus_id = ?
        """,
        [record["lineage"]["rules"], record["corpus_id"]],
    )
    df = _with_rationale(df, record["recipe"].get("mix", {}).get("rationale", "answer")).with_columns(
        pl.col("id").str.split("-").list.last().cast(pl.Int64).alias("_i"),
        input_column(),
    )
    return {
        name: sort_rows(df.filter(pl.col("config") == name)).select(*ROW_COLUMNS, "split") for name in CONFIGS
    }


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
