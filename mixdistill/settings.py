"""Where mixdistill keeps things on disk, overridable by flag or environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import BeforeValidator

from mixdistill.errors import MixdistillError

HOME_ENV = "MIXDISTILL_HOME"
REGISTRY_ENV = "MIXDISTILL_REGISTRY"
DATA_ENV = "MIXDISTILL_DATA"
DB_MEMORY_ENV = "MIXDISTILL_DB_MEMORY"
# DuckDB's own default is 80% of the machine's memory: a large build would take it all. Set explicitly, a query
# that needs more spills to `<registry>.tmp` instead.
DB_MEMORY_DEFAULT = "1GB"
_MEMORY = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B)", re.IGNORECASE)


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


def db_memory_advice() -> str:
    """The end of every out-of-memory message (a write's in the registry, a query's in the CLI)."""
    return f"set ${DB_MEMORY_ENV} higher (e.g. 4GB) and run again: everything committed so far is kept"


def db_memory() -> str:
    """The registry connection's memory limit (DuckDB syntax, e.g. `1GB`, `512MB`): $MIXDISTILL_DB_MEMORY, else 1GB."""
    value = os.environ.get(DB_MEMORY_ENV) or DB_MEMORY_DEFAULT
    if not _MEMORY.fullmatch(value.strip()):
        raise MixdistillError(f"${DB_MEMORY_ENV}={value!r}: give a size such as 1GB or 512MB")
    return value.strip()


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Root of the benchmark source files, laid out as `<source-name>/<path in the upstream repo>`: `--data-dir`,
    else $MIXDISTILL_DATA, else `$MIXDISTILL_HOME/data`; always absolute (a relative value is taken from the current
    folder), so tasks and recipes (`${MIXDISTILL_DATA}`) read the same folder.

    The built-in task loaders read e.g. `<data>/svamp/SVAMP.json` and
    `<data>/gsm8k/grade_school_math/data/test.jsonl` (see README, "Benchmark data").
    """
    if explicit:
        return Path(explicit).expanduser().absolute()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().absolute()
    return (default_home() / "data").absolute()


def publish_data_dir(path: Path):
    """`--data-dir` given: make it the value of ${MIXDISTILL_DATA} for recipes and child processes of this command;
    returns the function that puts the previous value back."""
    before = os.environ.get(DATA_ENV)
    os.environ[DATA_ENV] = str(path)

    def restore() -> None:
        if before is None:
            os.environ.pop(DATA_ENV, None)
        else:
            os.environ[DATA_ENV] = before

    return restore


def expand_path(value: str | os.PathLike | None, base: Path | None = None) -> Path | None:
    """`~` and `$VARS` in recipe paths (e.g. `${MIXDISTILL_DATA}/svamp/SVAMP.json`), so recipes travel between
    machines; `${MIXDISTILL_HOME}` defaults to `default_home()`. A relative path is taken relative to `base` (the
    recipe's folder). An unset variable is an error rather than a silently wrong path.
    """
    if value is None:
        return None
    text = expand_text(value)
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def expand_text(value: str | os.PathLike) -> str:
    """`${VARS}` / `$VARS` and a leading `~` expanded; `${MIXDISTILL_HOME}` and `${MIXDISTILL_DATA}` default to
    `default_home()` and `data_dir()` (both absolute). An unset variable is an error naming it."""
    env = {**os.environ, HOME_ENV: str(default_home()), DATA_ENV: str(data_dir())}
    text = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], m[0]), str(value))
    unset = re.search(r"\$\{?(\w+)", text)
    if unset:
        raise ValueError(f"environment variable ${unset[1]} in {value!s} is not set")
    return os.path.expanduser(text)


def _expand_model(value, info=None):
    """A model field: a Hub id (`org/name`) stays as written; a path (starting with `~`, `$`, `.` or `/`) is expanded
    like every other recipe path (relative: from the recipe's folder)."""
    if not isinstance(value, str) or not is_model_path(value):
        return value
    return str(expand_path(value, recipe_dir(info)))


def is_model_path(value: str) -> bool:
    return value.startswith(("~", "$", ".", "/"))


def recipe_dir(info) -> Path | None:
    """The folder of the recipe being validated (pydantic validation context), if any."""
    return (info.context or {}).get("recipe_dir") if info is not None else None


# A path field of a recipe: `~` and `$VARS` expanded, relative paths taken from the recipe file's folder.
RecipePath = Annotated[Path, BeforeValidator(lambda value, info: expand_path(value, recipe_dir(info)))]
# A model field (`model:`, `student:`): a Hub id, or a local path expanded the same way.
ModelRef = Annotated[str, BeforeValidator(lambda value, info: _expand_model(value, info))]
