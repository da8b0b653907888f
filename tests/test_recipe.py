"""Recipe validation: every problem on its own line, naming the file and the field, before any work starts."""

from __future__ import annotations

import pytest

from mixdistill.errors import RecipeError
from mixdistill.recipe import BuildRecipe, EvalRecipe, TrainRecipe, load_recipe

GOOD = """
name: svamp-md
version: 1.2.0
tasks:
  - task: svamp
    split: train
  - custom: {name: mine, path: data.csv, question: q, answer: a}
teachers:
  - provider: openai
    model: gpt-3.5-turbo
  - provider: openai-compatible
    name: local-vllm
    model: Qwen/Qwen2.5-7B-Instruct
    base_url: http://127.0.0.1:8000/v1
samples: {cot: 4, pot: 4}
mix:
  k_per_mode: 2
  exclude: [{task: svamp, split: test}]
"""


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_build_recipe(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert isinstance(recipe, BuildRecipe)
    assert [t.name for t in recipe.tasks] == ["svamp", "mine"]
    assert recipe.tasks[0].split_name == "train" and recipe.tasks[1].split_name == "train"
    assert [t.label for t in recipe.teachers] == ["openai/gpt-3.5-turbo", "local-vllm"]
    assert recipe.samples == {"cot": 4, "pot": 4} and recipe.mix.exclude[0].split == "test"


def test_every_problem_is_reported_with_file_and_field(tmp_path):
    path = write(tmp_path, """
name: bad
tasks:
  - task: svamp
    split: trian
  - task: nope
teachers:
  - provider: openia
    model: gpt-4o
  - provider: openai-compatible
    model: x
  - provider: openai
    model: y
    api_key_env: sk-live-123456
bogus: 1
""")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    lines = str(info.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    joined = "\n".join(lines)
    assert "tasks.0: task 'svamp' has no split 'trian'" in joined
    assert "tasks.1: unknown task 'nope'" in joined
    assert "teachers.0.provider: Input should be 'openai', 'anthropic'" in joined
    assert "teachers.1: provider 'openai-compatible' needs base_url" in joined
    assert "teachers.2.api_key_env: must be the NAME of an environment variable" in joined
    assert "bogus: Extra inputs are not permitted" in joined
    assert len(lines) == 6
    assert "sk-live-123456" not in joined  # a key pasted by mistake is never echoed


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\ntasks: [\n")
    with pytest.raises(RecipeError, match=rf"{path}: line \d+ invalid YAML"):
        load_recipe(path)


def test_missing_file_and_wrong_kind(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found: .*absent.yaml"):
        load_recipe(tmp_path / "absent.yaml")
    with pytest.raises(RecipeError, match="kind: unknown recipe kind 'deploy'"):
        load_recipe(write(tmp_path, "kind: deploy\n"))
    with pytest.raises(RecipeError, match="this command needs a 'train' recipe, not 'build'"):
        load_recipe(write(tmp_path, GOOD), expect=TrainRecipe)
    with pytest.raises(RecipeError, match="a recipe must be a YAML mapping"):
        load_recipe(write(tmp_path, "- 1\n- 2\n"))


def test_duplicate_teacher_names_and_zero_samples(tmp_path):
    text = GOOD.replace("name: local-vllm", "name: openai/gpt-3.5-turbo")
    with pytest.raises(RecipeError, match="teacher names must be unique; repeated: openai/gpt-3.5-turbo"):
        load_recipe(write(tmp_path, text))
    with pytest.raises(RecipeError, match="samples.pot must be >= 1"):
        load_recipe(write(tmp_path, GOOD.replace("pot: 4", "pot: 0")))


def test_train_and_eval_recipes(tmp_path):
    train = load_recipe(write(tmp_path, """
kind: train
name: llama2-md
student: meta-llama/Llama-2-7b-hf
corpus: {name: svamp-md, version: 1.0.0}
output_dir: out/llama2-md
"""), expect=TrainRecipe)
    assert train.lora.r == 16 and train.corpus.config == "mixed"
    ev = load_recipe(write(tmp_path, """
kind: eval
name: e
model: out/llama2-md
tasks: [{task: svamp, split: test}]
k: 10
""", "e.yaml"))
    assert isinstance(ev, EvalRecipe) and ev.k == 10
    with pytest.raises(RecipeError, match="corpus: give exactly one of 'name'"):
        load_recipe(write(tmp_path, "kind: train\nname: x\nstudent: s\noutput_dir: o\ncorpus: {}\n", "t.yaml"))
