"""`mixdistill build`: the whole flow for one recipe, each step reusing what the registry already holds.

recipe -> problems -> generations (cached by request_key) -> verdicts (only missing ones) -> mixed corpus version
-> Parquet + card + audit report. Re-running a finished build sends no request and runs no program; when nothing it
reads has changed since the export was written (`mixdistill.incremental`), it makes no plan, and does not mix or
export either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mixdistill.corpus import (
    CorpusError, CorpusVersion, build_version, export_path, export_version, load_version,
)
from mixdistill import settings
from mixdistill.generate import GenerationReport, Plan, TeacherTally, run_generation
from mixdistill.incremental import (
    forget_export, generation_settled, input_fingerprint, kept_export, read_manifest, rewrite_manifest, sources_stamp,
    write_manifest,
)
from mixdistill.provenance import check_sources
from mixdistill.recipe import BuildRecipe
from mixdistill.remix import mix_for_build
from mixdistill.registry import Registry
from mixdistill.registry.runs import tracked_run
from mixdistill.verify.pipeline import VerifySummary, verify_pending


@dataclass
class BuildResult:
    version: CorpusVersion
    generation: GenerationReport
    verification: VerifySummary
    export_dir: Path
    generation_settled: bool = False  # nothing could be pending: no plan was made, nothing was asked
    kept_since: str | None = None  # when the export was written, if this build found it up to date and kept it
    remixed: str | None = None  # what an incremental mix started from (`mixdistill.remix`), if it was one


def build(
    reg: Registry,
    recipe: BuildRecipe,
    out_root: Path,
    *,
    progress: bool = True,
    data_dir: Path | None = None,
    plan: Plan | None = None,
) -> BuildResult:
    check_sources(recipe)  # every license known before anything is generated or written
    out = export_path(out_root, recipe.name, recipe.version)
    with tracked_run(reg, "build", f"{recipe.name}@{recipe.version}", recipe):
        manifest = read_manifest(out)
        stamp = sources_stamp(recipe, data_dir or settings.data_dir())
        settled = generation_settled(manifest, stamp) and input_fingerprint(reg, recipe) == manifest["inputs"]
        if settled:
            generation = settled_generation(manifest)
        else:
            generation = run_generation(reg, recipe, progress, data_dir=data_dir, plan=plan)
        if generation.stopped:
            raise CorpusError(
                f"generation stopped before the corpus was complete ({generation.stopped}); everything received is "
                "stored: raise the budget or re-run to continue"
            )
        verification = verify_pending(reg, recipe.rule, progress, cot_reading=recipe.cot_reading,
                                      pot_conventions=tuple(recipe.pot_conventions))
        inputs = manifest["inputs"] if settled and not verification.verified else input_fingerprint(reg, recipe)
        complete = settled or (generation.errors == 0 and not any(t.batch for t in recipe.teachers))
        planned = {"sources": stamp, "generation_complete": complete,
                   "requests": {t.name: t.requests for t in generation.by_teacher.values()}}
        kept = kept_export(reg, recipe, out, inputs)
        if kept is not None:
            if not settled:  # planned again (a touched file) and found nothing to do: the next build need not
                rewrite_manifest(out, {**kept, **planned})
            return BuildResult(registered(reg, recipe), generation, verification, out, settled, kept["written_at"])
        forget_export(out)
        version, mixed = build_version(reg, recipe, inputs, mix=mix_for_build)
        with mixed:
            export_version(reg, version.ref, mixed, out)
        write_manifest(reg, recipe.name, recipe.version, out, inputs, **planned)
    return BuildResult(version, generation, verification, out, settled, remixed=mixed.remixed)


def settled_generation(manifest: dict) -> GenerationReport:
    """What a plan would have reported: every request of each teacher already answered."""
    tallies = {name: TeacherTally(name=name, requests=n, cached=n) for name, n in manifest["requests"].items()}
    return GenerationReport(run_id="not planned", total=sum(manifest["requests"].values()), by_teacher=tallies)


def registered(reg: Registry, recipe: BuildRecipe) -> CorpusVersion:
    """The stored version of `recipe`, as `build_version` would return it for unchanged inputs."""
    record = load_version(reg, f"{recipe.name}@{recipe.version}")
    return CorpusVersion(record["corpus_id"], record["name"], record["version"], record["fingerprint"],
                         record["stats"], record["lineage"], created=False)
