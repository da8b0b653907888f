"""Where mixdistill keeps things on disk, overridable by flag or environment."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

REGISTRY_ENV = "MIXDISTILL_REGISTRY"
DATA_ENV = "MIXDISTILL_DATA"


def default_home() -> Path:
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
