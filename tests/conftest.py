"""Shared fixtures. Tests are offline; those that need the benchmark files in ../shared/data skip without them."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MIXDISTILL_TEST_DATA", REPO.parent / "shared" / "data"))

# Point every loader (and every CLI call made in-process) at the shared data, and never at a user's registry.
os.environ["MIXDISTILL_DATA"] = str(SHARED_DATA)
# `datasets` keys its cache of a local folder by the folder's name and file names, not its content: a stale copy from
# an earlier run would be loaded in place of a fresh export. Every test session gets an empty cache of its own.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="mixdistill-tests-hf-datasets-")


@pytest.fixture
def shared_data() -> Path:
    """The benchmark data folder (`../shared/data`); skips the test when it is absent."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (set MIXDISTILL_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path, monkeypatch) -> Path:
    """Every test gets its own registry file, so no test can touch a user's registry."""
    path = tmp_path / "registry.duckdb"
    monkeypatch.setenv("MIXDISTILL_REGISTRY", str(path))
    return path


@pytest.fixture
def registry_path(_isolated_registry) -> Path:
    return _isolated_registry


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `mixdistill ARGS...` in-process through the console script's `main()`; returns (exit code, stdout, stderr)."""
    from mixdistill.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mixdistill", *args])
        monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables to the terminal width
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    return run
