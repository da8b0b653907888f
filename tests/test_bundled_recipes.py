"""Every recipe shipped in recipes/ validates, and names only tasks, splits and providers that exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixdistill.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes_for_the_paper_and_modern_setups():
    names = {p.stem for p in RECIPES}
    assert {"demo", "paper-md", "modern-multi-teacher", "svamp-published"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_bundled_recipe_is_valid(path, monkeypatch, shared_data):
    monkeypatch.setenv("MIXDISTILL_DATA", str(shared_data))
    recipe = load_recipe(path)
    assert recipe.name
