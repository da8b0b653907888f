"""`mixdistill build`: the whole flow for one recipe, each step reusing what the registry already holds.

recipe -> problems -> generations (cached by request_key) -> verdicts (only missing ones) -> mixed corpus version
-> Parquet + card + audit report. Re-running a finished build sends no request and runs no program; when nothing it
reads has changed since the export was written (`mixdistill.incremental`), it does not mix or export either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mixdistill.corpus import (
    CorpusError, CorpusVersion, build_version, export_path, export_version, load_version,
)
from mixdistill.generate import GenerationReport, Plan, run_generation
from mixdistill.incremental import forget_export, input_fingerprint, kept_export, write_manifest
from mixdistill.provenance import check_sources
from mixdistill.recipe import BuildRecipe
from mixdistill.registry import Registry
from mixdistill.registry.runs import tracked_run
from mixdistill.verify.pipeline import VerifySummary, verify_pending


@dataclass
class BuildResult:
    version: CorpusVersion
    generation: GenerationReport
    verification: VerifySummary
    export_dir: Path
    kept_since: str | None = None  # when the export was written, if this build found it up to date and kept it


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
    with tracked_run(reg, "build", f"{recipe.name}@{recipe.version}", recipe):
        generation = run_generation(reg, recipe, progress, data_dir=data_dir, plan=plan)
        if generation.stopped:
            raise CorpusError(
                f"generation stopped before the corpus was complete ({generation.stopped}); everything received is "
                "stored: raise the budget or re-run to continue"
            )
        verification = verify_pending(reg, recipe.rule, progress, cot_reading=recipe.cot_reading,
                                      pot_conventions=tuple(recipe.pot_conventions))
        out = export_path(out_root, recipe.name, recipe.version)
        inputs = input_fingerprint(reg, recipe)
        kept = kept_export(reg, recipe, out, inputs)
        if kept is not None:
            return BuildResult(registered(reg, recipe), generation, verification, out, kept["written_at"])
        forget_export(out)
        version, configs = build_version(reg, recipe)
        export_version(reg, version.ref, configs, out)
        write_manifest(reg, recipe.name, recipe.version, out, inputs)
    return BuildResult(version, generation, verification, out)


def registered(reg: Registry, recipe: BuildRecipe) -> CorpusVersion:
    """The stored version of `recipe`, as `build_version` would return it for unchanged inputs."""
    record = load_version(reg, f"{recipe.name}@{recipe.version}")
    return CorpusVersion(record["corpus_id"], record["name"], record["version"], record["fingerprint"],
                         record["stats"], record["lineage"], created=False)
