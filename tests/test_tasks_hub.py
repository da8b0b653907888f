"""Built-in tasks from a Hub dataset (`source: hub`), offline: local dataset folders laid out like the Hub copies."""

from __future__ import annotations

import json

import pytest

from mixdistill.errors import TaskError
from mixdistill.recipe import BuildRecipe
from mixdistill.tasks import TASKS, load_problems


def gsm8k_copy(shared_data, folder):
    """openai/gsm8k's layout: config `main`, one Parquet file per split, the upstream fields."""
    import polars as pl

    (folder / "main").mkdir(parents=True)
    for split in ("train", "test"):
        pl.read_ndjson(shared_data / f"gsm8k/grade_school_math/data/{split}.jsonl").write_parquet(
            folder / "main" / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: main/train-*\n"
        "  - split: test\n    path: main/test-*\n---\n")
    return folder


def ref(**kw) -> dict:
    recipe = BuildRecipe.model_validate({"name": "x", "tasks": [kw], "teachers": [{"provider": "openai", "model": "m"}]})
    return recipe.tasks[0]


def test_gsm8k_from_a_hub_copy_equals_the_upstream_files(shared_data, tmp_path):
    folder = gsm8k_copy(shared_data, tmp_path / "gsm8k-copy")
    t = ref(task="gsm8k", split="train", source="hub", hub=str(folder), hub_config="main", revision="main")
    split, problems = load_problems(t.loader, t.split_name, shared_data)
    upstream = TASKS["gsm8k"].load_split(shared_data, "train")
    assert split == "train" and len(problems) == 7473
    assert [(p.question, p.gold_number) for p in problems] == [(p.question, p.gold_number) for p in upstream]
    assert {p.source for p in problems} == {f"hub:{folder}"}  # a copy keeps its own problem ids


def test_svamp_copy_with_its_own_split(shared_data, tmp_path):
    rows = json.loads((shared_data / "svamp/SVAMP.json").read_text())
    folder = tmp_path / "svamp-copy"
    folder.mkdir()
    for split, part in (("train", rows[:700]), ("test", rows[700:])):
        (folder / f"{split}.json").write_text(json.dumps(part))
    t = ref(task="svamp", split="test", source="hub", hub=str(folder), revision="v1")
    split, problems = load_problems(t.loader, t.split_name, shared_data)
    assert split == "test" and len(problems) == 300 and problems[0].source_id == rows[700]["ID"]
    assert problems[0].gold_number == float(rows[700]["Answer"])


def test_hub_errors_are_clear(shared_data, tmp_path):
    with pytest.raises(ValueError, match="source: hub needs revision"):
        ref(task="gsm8k", source="hub")
    with pytest.raises(ValueError, match="hub, hub_config and revision need source: hub"):
        ref(task="gsm8k", hub="openai/gsm8k")
    known = ref(task="gsm8k", source="hub", revision="abc")
    assert (known.loader.id, known.loader.config, known.split_name) == ("openai/gsm8k", "main", "train")
    folder = tmp_path / "wrong"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"problem": "1+1?", "solution": "#### 2"}\n')
    t = ref(task="gsm8k", split="train", source="hub", hub=str(folder), revision="r")
    with pytest.raises(TaskError, match=r"task 'gsm8k': hub dataset .*wrong @ r, split 'train': record has no field "
                                        r"'answer'; fields: problem, solution"):
        load_problems(t.loader, t.split_name, shared_data)
