"""mixdistill: Mixed Distillation (CoT + PoT) corpora, built, verified, versioned and audited with SQL.

The Python API (README, "From Python"): `load_recipe`, `Registry`, `build_corpus`, `verify_pending`, `run_eval`,
`load_version`, `version_frames`, `registry_path`, `data_dir`. They are imported on first use (module `__getattr__`),
so `import mixdistill` stays cheap: the CLI and a user's script pay only for what they call.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # typing itself costs ~10 ms to import; type checkers read this name the same way

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_recipe": "mixdistill.recipe",
    "BuildRecipe": "mixdistill.recipe",
    "TrainRecipe": "mixdistill.recipe",
    "EvalRecipe": "mixdistill.recipe",
    "Registry": "mixdistill.registry",
    "build_corpus": "mixdistill.build",  # `build` is the submodule's name, so the function is exported as build_corpus
    "verify_pending": "mixdistill.verify.pipeline",
    "run_eval": "mixdistill.evaluate.run",
    "load_version": "mixdistill.corpus",
    "version_frames": "mixdistill.corpus",
    "registry_path": "mixdistill.settings",
    "data_dir": "mixdistill.settings",
}
__all__ = sorted(_API)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names resolve lazily
    from mixdistill.build import build as build_corpus
    from mixdistill.corpus import load_version, version_frames
    from mixdistill.evaluate.run import run_eval
    from mixdistill.recipe import BuildRecipe, EvalRecipe, TrainRecipe, load_recipe
    from mixdistill.registry import Registry
    from mixdistill.settings import data_dir, registry_path
    from mixdistill.verify.pipeline import verify_pending


_SOURCE_NAME = {"build_corpus": "build"}


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mixdistill' has no attribute {name!r}")
    value = getattr(import_module(module), _SOURCE_NAME.get(name, name))
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
