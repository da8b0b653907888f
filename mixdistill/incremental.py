"""Incremental rebuilds: a build whose inputs did not change does no mixing and no export.

The *input fingerprint* is computed by DuckDB from what is stored: an order-free sum of whole-row hashes over every
row a version's Parquet, card and audit report are made from (the recipe teachers' generations on every task, since
the report's failure table spans them; their verdicts under the recipe's rule, their executions, problems, splits and
teacher rows), plus the recipe and the versions that shape the export. No row is loaded into Python, so checking it
costs a few scans where a rebuild costs a mix and an export.

Generation is skipped too when nothing could be pending: the *sources stamp* (size and modification time of every
file a plan reads: task files, replay recordings, prompt templates) is as recorded, the last generation left nothing
to retry (no errors, no budget stop, no Batch API teacher with batches in flight) and the registry's input
fingerprint is as recorded. Then the plan (a second per 30,000 requests: task and replay files parsed, every request
key hashed) is not even made.

The export folder's `export.json` records that fingerprint, the version it holds (id, fingerprint, registration time)
and each file's SHA-256. An export is kept only when all of them match the registry and the files on disk, so a
tampered, partial or foreign export is written again. A build removes the manifest before it exports, so an
interrupted export is never mistaken for a finished one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from mixdistill import settings
from mixdistill.ids import content_hash
from mixdistill.recipe import BuildRecipe
from mixdistill.registry import Registry
from mixdistill.tasks.sources import sha256_file
from mixdistill.teachers.replay import recording_files

MANIFEST = "export.json"

_INPUTS_SQL = """
WITH g AS (
    SELECT g.* FROM generations g JOIN teachers t USING (teacher_id) WHERE t.name IN (SELECT unnest($labels))
)
SELECT 'generations' AS part, count(*) AS n, sum(hash(g))::VARCHAR AS h FROM g
UNION ALL
SELECT 'verdicts', count(*), sum(hash(v))::VARCHAR FROM verdicts v SEMI JOIN g USING (request_key) WHERE v.rule = $rule
UNION ALL
SELECT 'executions', count(*), sum(hash(e))::VARCHAR FROM executions e SEMI JOIN g USING (request_key)
UNION ALL
SELECT 'problems', count(*), sum(hash(p))::VARCHAR FROM problems p SEMI JOIN g USING (problem_id)
UNION ALL
SELECT 'problem_splits', count(*), sum(hash(s))::VARCHAR FROM problem_splits s SEMI JOIN g USING (problem_id)
UNION ALL
SELECT 'teachers', count(*), sum(hash(t))::VARCHAR FROM teachers t WHERE t.name IN (SELECT unnest($labels))
"""


def input_fingerprint(reg: Registry, recipe: BuildRecipe) -> str:
    """Hash of everything a build of `recipe` reads from this registry, and of what else shapes its export."""
    import duckdb

    from mixdistill import __version__

    labels = sorted({t.label for t in recipe.teachers})
    parts = reg.con.execute(_INPUTS_SQL, {"labels": labels, "rule": recipe.rule}).fetchall()
    return content_hash({
        "recipe": recipe.model_dump(mode="json"),
        "registry": sorted(map(list, parts)),
        "versions": {"mixdistill": __version__, "duckdb": duckdb.__version__},  # templates; `hash` itself
        "folders": [str(settings.data_dir()), str(settings.default_home())],  # written as ${...} in recipe.yaml
    }, 32)


def sources_stamp(recipe: BuildRecipe, data_dir: Path) -> str | None:
    """Size and modification time of every file a plan of `recipe` reads besides the registry (a pinned Hub source
    by its revision); None when something cannot be stamped (a Hub dataset without a revision, a missing file)."""
    from mixdistill.prompts import PROMPTS_DIR
    from mixdistill.tasks import TASKS

    pinned, files = [], sorted(PROMPTS_DIR.rglob("*.yaml"))
    for t in recipe.tasks:
        if t.custom is not None and t.custom.hub is not None:
            if not t.custom.revision:
                return None
            pinned.append(t.custom.model_dump(mode="json"))
        elif t.custom is not None:
            files.append(Path(t.custom.path))
        elif t.source == "hub":  # a revision is required there
            pinned.append(t.model_dump(mode="json"))
        else:
            files += [data_dir / f for f in TASKS[t.task].files]
    for spec in recipe.teachers:
        if spec.provider == "replay":
            files += recording_files(Path(spec.path))
    try:
        stats = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    except OSError:
        return None
    return content_hash({"files": stats, "pinned": pinned}, 32)


def read_manifest(out: Path) -> dict:
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def generation_settled(manifest: dict, stamp: str | None) -> bool:
    """The build that wrote `manifest` planned from these very files and left nothing to retry; with the registry's
    input fingerprint unchanged as well, a plan would find every request answered."""
    return stamp is not None and manifest.get("sources") == stamp and manifest.get("generation_complete") is True


def _version_identity(reg: Registry, name: str, version: str) -> dict | None:
    found = reg.query(
        "SELECT corpus_id, fingerprint, created_at::VARCHAR AS registered FROM corpora WHERE name = ? AND version = ?",
        [name, version],
    )
    return found.to_dicts()[0] if found.height else None


def _files(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): sha256_file(p)
        for p in sorted(out.rglob("*")) if p.is_file() and p.relative_to(out).as_posix() != MANIFEST
    }


def forget_export(out: Path) -> None:
    """Before an export: until a new manifest is written, the folder is not a kept export."""
    (out / MANIFEST).unlink(missing_ok=True)


def write_manifest(reg: Registry, name: str, version: str, out: Path, inputs: str, *, sources: str | None,
                   generation_complete: bool, requests: dict[str, int]) -> None:
    """`export.json`: the inputs and the version this folder was exported from, and every file's SHA-256; the sources
    stamp, whether generation left nothing to retry, and each teacher's request count (what a skipped plan reports)."""
    manifest = {
        "corpus": f"{name}@{version}", "inputs": inputs, "version": _version_identity(reg, name, version),
        "sources": sources, "generation_complete": generation_complete, "requests": requests,
        "written_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "files": _files(out),
    }
    rewrite_manifest(out, manifest)


def rewrite_manifest(out: Path, manifest: dict) -> None:
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def kept_export(reg: Registry, recipe: BuildRecipe, out: Path, inputs: str) -> dict | None:
    """The manifest of an export that is still exactly what a rebuild would write; None when it must be rebuilt."""
    manifest = read_manifest(out)
    if manifest.get("inputs") != inputs:
        return None
    identity = _version_identity(reg, recipe.name, recipe.version)
    if identity is None or manifest.get("version") != identity:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for rel, digest in files.items():
        path = out / rel
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return manifest
