"""Where mixdistill keeps things on disk, overridable by flag or environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import BeforeValidator

HOME_ENV = "MIXDISTILL_HOME"
REGISTRY_ENV = "MIXDISTILL_REGISTRY"
DATA_ENV = "MIXDISTILL_DATA"


def default_home() -> Path:
    """Where mixdistill keeps its files: $MIXDISTILL_HOME, else the platform's user data dir."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    return Path(platformdirs.user_data_dir("mixdistill", appauthor=False))


def registry_path(explicit: str | os.PathLike | None = None) -> Path:
    """The registry file: `--registry`, else $MIXDISTILL_REGISTRY, else the user's data dir."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV]).expanduser()
    return default_home() / "registry.duckdb"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Root of the benchmark source files, laid out as `<source-name>/<path in the upstream repo>`.

    The built-in task loaders read e.g. `<data>/svamp/SVAMP.json` and
    `<data>/gsm8k/grade_school_math/data/test.jsonl` (see README, "Benchmark data").
    """
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return default_home() / "data"


def expand_path(value: str | os.PathLike | None, base: Path | None = None) -> Path | None:
    """`~` and `$VARS` in recipe paths (e.g. `${MIXDISTILL_DATA}/svamp/SVAMP.json`), so recipes travel between
    machines; `${MIXDISTILL_HOME}` defaults to `default_home()`. A relative path is taken relative to `base` (the
    recipe's folder). An unset variable is an error rather than a silently wrong path.
    """
    if value is None:
        return None
    env = {HOME_ENV: str(default_home()), **os.environ}
    text = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], m[0]), str(value))
    if "$" in text:
        raise ValueError(f"environment variable in {value!s} is not set")
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def recipe_dir(info) -> Path | None:
    """The folder of the recipe being validated (pydantic validation context), if any."""
    return (info.context or {}).get("recipe_dir") if info is not None else None


# A path field of a recipe: `~` and `$VARS` expanded, relative paths taken from the recipe file's folder.
RecipePath = Annotated[Path, BeforeValidator(lambda value, info: expand_path(value, recipe_dir(info)))]
