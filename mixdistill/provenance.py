"""What a card may say about where a corpus came from, derived from the recipe, the registry and the source files.

For every teacher: generated (provider, model, prompt ids, sampling, the date range of its calls, the provider's terms)
or replayed (the recorded file, recognised by SHA-256 as a known published source: repository, commit, license,
citation; or a source the recipe declares with `license:` and `source:`). For every contributing source: its license
and citation, and from them the corpus license (`mixdistill.licenses`). Anything that cannot be derived is an error
naming the source, raised before a build spends anything (`check_sources`).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from mixdistill.licenses import LicenseError, derive, lookup
from mixdistill.recipe import BuildRecipe, TeacherSpec
from mixdistill.registry import Registry
from mixdistill.tasks import TASKS
from mixdistill.tasks.sources import BY_REPOSITORY, MIXED_DISTILLATION, identify_all

TERMS = {
    "openai": "Outputs of OpenAI models are subject to OpenAI's terms of use (https://openai.com/policies/), which "
    "among other things restrict using outputs to develop models that compete with OpenAI.",
    "anthropic": "Outputs of Anthropic models are subject to Anthropic's Commercial Terms of Service and Usage Policy "
    "(https://www.anthropic.com/legal/commercial-terms).",
    "openai-compatible": "Served by an OpenAI-compatible server: the license of the model `{model}` governs its outputs.",
    "transformers": "Run locally with transformers: the license of the model `{model}` governs its outputs.",
}
REPLAY_TERMS = ("Recorded outputs of {model} ({provider}), published by their authors under {license}; "
                "{provider}'s own terms for the model may also apply.")


def replay_files(path: Path) -> list[Path]:
    """The files a replay teacher takes its answers from (a PaLM `llm/` folder: its `*_CoT_*.json` files)."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob("*_CoT_*.json"))
    return [path] if path.is_file() else []


def replay_source(spec: TeacherSpec | dict) -> dict:
    """The published source of a replay teacher's recordings, or the one its recipe declares; else an error."""
    spec = spec if isinstance(spec, dict) else spec.model_dump(mode="json")
    label = spec.get("name") or f"{spec['provider']}/{spec['model']}"
    files = replay_files(Path(spec["path"]))
    found = identify_all(files)
    if files and not found.unknown and len(found.sources) == 1:
        src, used = found.sources[0]
        return {
            "key": src.key, "title": src.title, "repository": src.repository, "commit": src.commit, "url": src.url,
            "license": src.license, "citation": src.citation, "note": src.note, "model": src.model,
            "model_provider": src.model_provider,
            "files": [{"path": f.repo_path, "sha256": f.sha256} for f in sorted(used, key=lambda f: f.repo_path)],
        }
    if spec.get("license"):
        lookup(spec["license"], f"teacher {label!r} (replayed from {spec['path']})")
        return {
            "key": f"teacher:{label}", "title": f"recorded outputs of {spec['model']}", "repository": "",
            "commit": "", "url": spec.get("source") or "", "license": spec["license"], "citation": "", "note": "",
            "model": spec["model"], "model_provider": "",
            "files": [{"path": Path(f).name, "sha256": ""} for f in files] or [{"path": Path(spec["path"]).name, "sha256": ""}],
        }
    what = ", ".join(p.name for p in found.unknown) or str(spec["path"])
    raise LicenseError(
        f"teacher {label!r}: replayed file {what} is not a known published source (recognised by SHA-256), so its "
        "license cannot be derived; give the teacher `license:` (and `source:`, where it was published)"
    )


def check_sources(recipe: BuildRecipe) -> None:
    """Every source's license known before a build starts (nothing generated, nothing written)."""
    for t in recipe.tasks:
        if t.custom is not None:
            lookup(t.custom.license, f"custom task {t.custom.name!r} ({t.custom.label()})")
        else:
            lookup(TASKS[t.task].license, f"task {t.task!r}")
    for spec in recipe.teachers:
        if spec.provider == "replay":
            replay_source(spec)


def _teacher_calls(reg: Registry, scope: str, params: list) -> pl.DataFrame:
    return reg.query(
        f"""
        SELECT t.name AS teacher, list(DISTINCT g.prompt_id ORDER BY g.prompt_id) AS prompt_ids,
               list(DISTINCT g.params ORDER BY g.params) AS params,
               strftime(min(g.created_at), '%Y-%m-%d') AS first_call, strftime(max(g.created_at), '%Y-%m-%d') AS last_call,
               count(DISTINCT g.request_key) AS calls
        FROM generations g JOIN teachers t USING (teacher_id) JOIN problem_splits s ON s.problem_id = g.problem_id
        WHERE {scope}
        GROUP BY ALL
        """,
        params,
    )


def describe(reg: Registry, recipe: BuildRecipe, kept: dict[str, int], benchmarks: list[dict], scope: str,
             params: list) -> dict:
    """Teachers (how their rationales were obtained), sources (license, citation) and the corpus license, from the
    rows kept per teacher and the (task, source, license) of the problems with rows."""
    calls = {r["teacher"]: r for r in _teacher_calls(reg, scope, params).to_dicts()}
    teachers, sources = [], []
    for spec in recipe.teachers:
        c = calls.get(spec.label, {})
        entry = {
            "name": spec.label, "provider": spec.provider, "model": spec.model, "base_url": spec.base_url,
            "rows": kept.get(spec.label, 0), "calls": c.get("calls", 0), "prompt_ids": c.get("prompt_ids") or [],
        }
        if spec.provider == "replay":
            src = replay_source(spec)
            entry.update(obtained="replayed", source=src, terms=REPLAY_TERMS.format(
                model=src["model"], provider=src["model_provider"] or "the model's provider", license=src["license"]))
            if entry["rows"]:
                sources.append({**{k: src[k] for k in ("title", "repository", "commit", "url", "license", "citation",
                                                        "note")}, "kind": "teacher outputs", "name": src["title"]})
        else:
            sampling = [json.loads(p) for p in (c.get("params") or []) if p]
            entry.update(obtained="generated", sampling=sampling or [recipe.sampling.model_dump()],
                         first_call=c.get("first_call"), last_call=c.get("last_call"),
                         terms=TERMS[spec.provider].format(model=spec.model))
        teachers.append(entry)
    for b in benchmarks:
        known = BY_REPOSITORY.get(b["source"])
        copy_of = BY_REPOSITORY.get(TASKS[b["task"]].source) if b["task"] in TASKS else None
        if known is not None:
            sources.insert(0, {"name": known.title, "kind": "benchmark", "title": known.title,
                               "repository": known.repository, "commit": known.commit, "url": known.url,
                               "license": b["license"], "citation": known.citation, "note": known.note})
        elif copy_of is not None and b["source"].startswith("hub:"):  # a Hub copy of a built-in benchmark
            hub_id = b["source"].removeprefix("hub:")
            sources.insert(0, {"name": f"{copy_of.title} (Hub copy {hub_id})", "kind": "benchmark",
                               "title": copy_of.title, "repository": "", "commit": "",
                               "url": f"https://huggingface.co/datasets/{hub_id}", "license": b["license"],
                               "citation": copy_of.citation,
                               "note": f"a copy of {copy_of.repository}; the license is the benchmark's"})
        else:
            sources.insert(0, {"name": f"{b['task']} ({b['source']})", "kind": "benchmark", "title": b["task"],
                               "repository": "", "commit": "", "url": "", "license": b["license"], "citation": "",
                               "note": "a custom task; its license as given in the recipe"})
    lic = derive([(s["name"], s["license"]) for s in sources])
    method = {"name": "Mixed Distillation", "kind": "method", "title": MIXED_DISTILLATION.title, "repository": "",
              "commit": "", "url": "https://arxiv.org/abs/2312.10730", "license": "", "citation": MIXED_DISTILLATION.citation,
              "note": ""}
    return {"teachers": teachers, "sources": sources, "method": method,
            "license": {"id": lic.id, "details": lic.spdx, "note": lic.note}}


__all__ = ["LicenseError", "check_sources", "describe", "replay_source"]
