"""Incremental re-mix: a version that adds a teacher to its parent's recipe mixes only the problems the new teacher
touched, and registers and exports exactly what a full mix would (same Parquet bytes, fingerprint and statistics).
Through the console script, on the published SVAMP outputs plus a third, written teacher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import mixdistill.remix
from mixdistill.recipe import BuildRecipe, load_recipe
from mixdistill.registry import Registry
from mixdistill.remix import remix_base

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "recipes" / "svamp-published.yaml"


def _recipe(tmp_path: Path, version: str, teachers: list[dict], **mix) -> Path:
    spec = yaml.safe_load(PUBLISHED.read_text())
    spec["version"] = version
    spec["mix"].update({"k_per_mode": 2, **mix})  # two per mode, of up to three teachers' rationales
    spec["teachers"] += teachers
    path = tmp_path / f"recipe-{version}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


WRITTEN = {  # name: (which problems, CoT, PoT); third also writes a wrong PoT for some of its problems
    "second": (lambda i: i % 3 == 0, "We count them all: {gold}. The answer is {gold}.", "total = {gold}\nans = total"),
    "third": (lambda i: i % 8 == 0, "So it is {gold}. The answer is {gold}.", "answer = {gold}\nans = answer"),
}


def _teacher(registry_path: Path, folder: Path, name: str) -> dict:
    """A replayed teacher of written recordings for some of the training problems."""
    picks, cot, pot = WRITTEN[name]
    with Registry.open(registry_path) as reg:
        problems = reg.query("SELECT p.question, p.gold_text FROM problems p JOIN problem_splits s USING (problem_id) "
                             "WHERE s.task = 'svamp' AND s.split = 'train' ORDER BY p.problem_id")
    path = folder / f"{name}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, (question, gold) in enumerate(problems.iter_rows()):
            if picks(i):
                program = "ans = {gold} + 1" if name == "third" and i % 16 == 8 else pot
                for mode, text in (("cot", cot), ("pot", program)):
                    f.write(json.dumps({"question": question, "mode": mode, "response": text.format(gold=gold)}) + "\n")
    return {"name": name, "provider": "replay", "model": name, "path": str(path), "license": "apache-2.0",
            "source": "written by tests/test_remix.py"}


@pytest.fixture
def parent(cli, tmp_path, shared_data, registry_path):
    """svamp-published with a second teacher on a third of the problems, built as 1.0.0; the third teacher."""
    first = _recipe(tmp_path, "0.9.0", [], k_per_mode=1)  # the problems, to write recordings for
    code, _, err = cli("build", str(first), "--out", str(tmp_path / "problems"), "--no-progress")
    assert code == 0, err
    second = _teacher(registry_path, tmp_path, "second")
    code, _, err = cli("build", str(_recipe(tmp_path, "1.0.0", [second])), "--out", str(tmp_path / "a"),
                       "--no-progress")
    assert code == 0, err
    return second, _teacher(registry_path, tmp_path, "third")


def _parquet(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def _version(registry: Path, ref: str) -> dict:
    with Registry.open(registry, read_only=True) as reg:
        return reg.query("SELECT fingerprint, stats FROM corpora WHERE name || '@' || version = ?", [ref]).to_dicts()[0]


def test_an_added_teacher_re_mixes_only_its_problems_and_gives_the_full_mix(cli, parent, tmp_path, registry_path,
                                                                           monkeypatch):
    recipe = _recipe(tmp_path, "1.1.0", list(parent))
    full_registry = tmp_path / "full.duckdb"
    shutil.copy(registry_path, full_registry)
    mixed_problems = []
    real_mix_touched = mixdistill.remix._mix_touched

    def watched(reg, ws, recipe, base):
        stats = real_mix_touched(reg, ws, recipe, base)
        mixed_problems.append(ws.scalar("SELECT count(DISTINCT problem_id) FROM chosen"))
        return stats

    def no_full_mix(*args):
        raise AssertionError("the added teacher's build mixed every problem")

    monkeypatch.setattr(mixdistill.remix, "_mix_touched", watched)
    monkeypatch.setattr(mixdistill.remix, "mix_recipe", no_full_mix)
    code, text, err = cli("build", str(recipe), "--out", str(tmp_path / "b"), "--no-progress")
    assert code == 0, err
    assert 0 < mixed_problems[0] <= 100  # the third teacher's eighth of the 800 problems, not all of them
    assert (f"corpus svamp-published@1.1.0 re-mixed from svamp-published@1.0.0: the {mixed_problems[0]} problems third "
            "wrote a correct rationale for, the others' rows kept") in text

    monkeypatch.undo()
    monkeypatch.setenv("MIXDISTILL_REGISTRY", str(full_registry))
    monkeypatch.setattr(mixdistill.remix, "remix_base", lambda reg, recipe: None)  # the full mix, for comparison
    code, _, err = cli("build", str(recipe), "--out", str(tmp_path / "c"), "--no-progress")
    assert code == 0, err

    ref = ("svamp-published", "1.1.0")
    incremental, full = tmp_path.joinpath("b", *ref), tmp_path.joinpath("c", *ref)
    assert _parquet(incremental) == _parquet(full) and len(_parquet(full)) >= 6
    assert _parquet(incremental) != _parquet(tmp_path.joinpath("a", "svamp-published", "1.0.0"))
    ours, theirs = _version(registry_path, "svamp-published@1.1.0"), _version(full_registry, "svamp-published@1.1.0")
    assert ours["fingerprint"] == theirs["fingerprint"]
    stats = json.loads(ours["stats"])  # all but the input fingerprint, which hashes the registries' own run times
    assert {**stats, "inputs": None} == {**json.loads(theirs["stats"]), "inputs": None}
    assert stats["mix"]["dropped_over_k"] > 0  # where three teachers wrote, one rationale a mode lost its place
    with Registry.open(registry_path, read_only=True) as reg:
        kept = dict(reg.execute(
            "SELECT t.name, count(*) FROM corpus_rows JOIN generations g USING (request_key) JOIN teachers t "
            "USING (teacher_id) WHERE config = 'mixed' AND corpus_id = (SELECT corpus_id FROM corpora WHERE version "
            "= '1.1.0') GROUP BY 1"))
        second_places = reg.scalar("SELECT count(*) FROM corpus_rows WHERE row_id LIKE '%-2' AND corpus_id = "
                                   "(SELECT corpus_id FROM corpora WHERE version = '1.0.0')")
    assert kept.keys() == {"palm-540b", "codex", "second", "third"}  # the new teacher's rationales are in the corpus
    assert second_places > 100  # and rows kept from the parent in second place (their `_i` is read back)


def test_a_full_mix_where_the_policy_or_the_inputs_do_not_allow_one(cli, parent, tmp_path, registry_path):
    def base(path: Path):
        with Registry.open(registry_path) as reg:
            return remix_base(reg, load_recipe(path, BuildRecipe))

    second, third = parent
    added = base(_recipe(tmp_path, "1.1.0", [second, third]))
    assert added is not None and added.added == ["third"] and added.ref == "svamp-published@1.0.0"
    assert base(_recipe(tmp_path, "1.1.0", [second])) is None  # no teacher added
    assert base(_recipe(tmp_path, "1.1.0", [third])) is None  # one taken away
    assert base(_recipe(tmp_path, "1.1.0", [second, third], teacher_quotas={"third": 0.1})) is None  # whole shares
    assert base(_recipe(tmp_path, "1.1.0", [second, third], seed=1)) is None  # another policy
    with Registry.open(registry_path) as reg:  # the parent's own inputs changed since it was built
        reg.con.execute("UPDATE verdicts SET correct = NOT correct WHERE request_key = "
                        "(SELECT min(request_key) FROM corpus_rows)")
    assert base(_recipe(tmp_path, "1.1.0", [second, third])) is None
