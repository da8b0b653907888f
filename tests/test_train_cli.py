"""`mixdistill train`, `push-adapter` (against the loopback fake Hub) and `bench train --tiny`, run in-process."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

pytest.importorskip("peft")

from fakes.hub import fake_hub  # noqa: E402
from test_train import TINY_RECIPE, corpus_dir, student  # noqa: E402,F401  (fixtures)

from mixdistill.registry import Registry  # noqa: E402


def write_recipe(tmp_path, student, corpus, **changes):
    data = yaml.safe_load(TINY_RECIPE.read_text())
    data.update(student=str(student), corpus=corpus, output_dir=str(tmp_path / "run"), **changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_then_push_adapter_with_card(cli, student, corpus_dir, tmp_path, registry_path, monkeypatch):
    recipe = write_recipe(tmp_path, student, {"parquet": str(corpus_dir)}, max_steps=2, save_steps=2)
    code, out, err = cli("train", str(recipe))
    assert code == 0, err
    assert "train: 48 examples, none longer than max_length 256" in out and "adapter:" in out
    with Registry.open(registry_path, read_only=True) as reg:
        model_id, adapter = reg.query("SELECT model_id, adapter_path FROM models").row(0)
    with Registry.open(registry_path) as reg:  # an evaluation recorded for this model ends up in model-index
        reg.insert("evals", [{"eval_id": "e1", "model": model_id, "task": "svamp", "split": "test", "mode": "pot",
                              "k": 1, "n": 200, "correct": 101, "accuracy": 0.505}])

    with fake_hub() as hub:
        monkeypatch.setenv("HF_TOKEN", hub.token)
        code, out, err = cli("push-adapter", model_id, "--repo", "org/tiny-md", "--endpoint", hub.endpoint, "--private")
        assert code == 0, err
        repo = hub.repos[("model", "org/tiny-md")]
        assert repo.private and len(repo.commits) == 1
        assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training_info.json",
                "README.md"} <= set(repo.files)
        assert "training_args.bin" not in repo.files
        card = repo.files["README.md"].decode()
        meta = yaml.safe_load(card.split("---")[1])
        # a local base model: named in the card's own metadata, never put in `base_model` (which the Hub links)
        assert "base_model" not in meta and meta["mixdistill"]["base_model_local"] == student.name
        assert meta["library_name"] == "peft"
        assert meta["mixdistill"]["corpus"] == str(corpus_dir)
        result = meta["model-index"][0]["results"][0]
        assert result["dataset"] == {"type": "svamp", "name": "svamp", "split": "test"}
        assert result["metrics"][0]["value"] == 0.505
        assert "r=8, alpha=16" in card
        for stored in repo.files.values():
            assert hub.token.encode() not in stored
    with Registry.open(registry_path, read_only=True) as reg:
        hub_repo, revision = reg.query("SELECT hub_repo, hub_revision FROM models").row(0)
    assert hub_repo == "org/tiny-md" and revision == repo.commits[-1].oid
    assert hub.token.encode() not in registry_path.read_bytes()
    assert json.loads((tmp_path / "run" / "adapter" / "training_info.json").read_text())["metrics"]["global_step"] == 2


def test_push_adapter_refuses_before_upload(cli, tmp_path, monkeypatch):
    code, _, err = cli("push-adapter", str(tmp_path), "--repo", "org/x")
    assert code == 2 and "no adapter_config.json" in err
    code, _, err = cli("push-adapter", str(tmp_path), "--repo", "not a repo")
    assert code == 2 and "invalid Hub repo name" in err


def test_bad_inputs_are_one_line_errors(cli, student, corpus_dir, tmp_path):
    missing = write_recipe(tmp_path, student, {"name": "nope", "version": "1.0.0"})
    code, _, err = cli("train", str(missing))
    assert code == 2 and "nope@1.0.0" in err and "Traceback" not in err
    no_version = write_recipe(tmp_path, student, {"name": "nope"})
    code, _, err = cli("train", str(no_version))
    assert code == 2 and "corpus: a registry corpus needs 'version'" in err
    too_short = write_recipe(tmp_path, student, {"parquet": str(corpus_dir)}, max_length=16)
    code, _, err = cli("train", str(too_short))
    assert code == 2 and "no example fits in max_length 16" in err


def test_bench_train_tiny(cli, tmp_path):
    out_json = tmp_path / "bench.json"
    code, out, err = cli("bench", "train", "--tiny", "--run", "2", "--run", "2:ckpt", "--seq-len", "64", "--steps", "2",
                         "--warmup", "1", "--json", str(out_json))
    assert code == 0, err
    summary = json.loads(out_json.read_text())
    assert [r["status"] for r in summary["results"]] == ["ok", "ok"]
    assert all(r["tokens_per_s"] > 0 for r in summary["results"])
    # 4 N_frozen + 6 N_lora + 12 L s h, the count the MFU figure uses
    assert summary["flops_per_token"] == 4 * summary["frozen_linear_params"] + 6 * summary["lora_params"] + 12 * 2 * 128 * 64
    code, _, err = cli("bench", "train", "--tiny", "--run", "x:ckpt")
    assert code == 2 and "BATCH[:ckpt]" in err


def test_corpus_from_hub_dataset_at_a_revision(corpus_dir, tmp_path):
    """A Hub dataset id + revision, through `datasets.load_dataset` against the fake Hub (in a subprocess: the Hub
    endpoint is read when huggingface_hub is imported)."""
    import os
    import subprocess

    from huggingface_hub import HfApi

    card = "---\nconfigs:\n- config_name: mixed\n  data_files:\n  - split: train\n    path: mixed/train-*.parquet\n" \
           "  - split: validation\n    path: mixed/validation-*.parquet\n---\n"
    (tmp_path / "card").mkdir()
    (tmp_path / "card" / "README.md").write_text(card)
    code = (
        "import json, sys\n"
        "from mixdistill.recipe import CorpusRef, TrainRecipe\n"
        "from mixdistill.train.data import load_corpus, TrainError\n"
        "def load(rev):\n"
        "    r = TrainRecipe(name='t', student='s', output_dir='o', corpus=CorpusRef(hub='org/svamp-md', revision=rev))\n"
        "    c = load_corpus(r.corpus, r, None)\n"
        "    return [c.train.num_rows, c.eval.num_rows if c.eval is not None else 0, c.label, c.hub, c.revision]\n"
        "out = {'v1': load('v1.0.0')}\n"
        "try:\n    load('v9.9.9')\nexcept TrainError as e:\n    out['missing'] = str(e)\n"
        "print(json.dumps(out))\n"
    )
    with fake_hub() as hub:
        api = HfApi(endpoint=hub.endpoint, token=hub.token)
        api.create_repo("org/svamp-md", repo_type="dataset")
        api.upload_folder(folder_path=str(corpus_dir), repo_id="org/svamp-md", repo_type="dataset", allow_patterns="mixed/*")
        api.upload_file(path_or_fileobj=str(tmp_path / "card" / "README.md"), path_in_repo="README.md",
                        repo_id="org/svamp-md", repo_type="dataset")
        api.create_tag("org/svamp-md", tag="v1.0.0", repo_type="dataset")
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HF_HOME": str(tmp_path / "hf"),
               "HF_DATASETS_OFFLINE": "0", "HF_HUB_OFFLINE": "0"}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["v1"] == [48, 8, "org/svamp-md@v1.0.0", "org/svamp-md", "v1.0.0"]
    assert out["missing"].startswith("corpus.hub org/svamp-md@v9.9.9 cannot be loaded")


def test_rerun_of_a_finished_train_changes_nothing_and_a_resumed_run_keeps_the_model_id(
        cli, student, corpus_dir, tmp_path, registry_path):  # noqa: F811
    from mixdistill.train.publish import eval_results

    recipe = write_recipe(tmp_path, student, {"parquet": str(corpus_dir)}, max_steps=2, save_steps=2)
    code, _, err = cli("train", str(recipe))
    assert code == 0, err
    info_file = tmp_path / "run" / "adapter" / "training_info.json"
    info_before = info_file.read_bytes()
    with Registry.open(registry_path) as reg:
        model_id, adapter = reg.query("SELECT model_id, adapter_path FROM models").row(0)
        reg.insert("evals", [{"eval_id": "e1", "model": model_id, "task": "svamp", "split": "test", "mode": "pot",
                              "k": 1, "n": 50, "correct": 13, "accuracy": 0.26}])
    assert json.loads(info_before)["model_id"] == model_id

    code, out, err = cli("train", str(recipe))  # the documented resume command, on a finished training
    assert code == 0, err
    assert "already trained" in out and f"registered model {model_id}" in out
    assert info_file.read_bytes() == info_before
    with Registry.open(registry_path, read_only=True) as reg:
        assert reg.query("SELECT count(*) AS n FROM models")["n"][0] == 1
        assert reg.query("SELECT count(*) AS n FROM runs")["n"][0] == 1
    assert [r["accuracy"] for r in eval_results(registry_path, [model_id, adapter])] == [0.26]

    code, out, err = cli("train", str(recipe), "--max-steps", "4")  # more steps: resumes from checkpoint-2
    assert code == 0, err
    assert "resuming from" in out and "checkpoint-2" in out
    with Registry.open(registry_path, read_only=True) as reg:
        rows = reg.query("SELECT model_id, metrics FROM models").rows()
    assert len(rows) == 1 and rows[0][0] == model_id and json.loads(rows[0][1])["global_step"] == 4
    info = json.loads(info_file.read_text())
    assert info["model_id"] == model_id and info["metrics"]["global_step"] == 4
    assert info["metrics"]["train_loss"] > 0  # the loss of the steps this run trained, not 0.0
    assert [r["accuracy"] for r in eval_results(registry_path, [model_id])] == [0.26]  # still attached


def test_dry_run_prints_the_card_whose_snippet_prompts_as_training_did(cli, student, corpus_dir, tmp_path):  # noqa: F811
    """The card's usage snippet, run as written (repo id -> the adapter folder), builds the same token ids as training
    built for the same input: BOS included, although this tokenizer's `tokenizer(text)` adds none."""
    import re

    import datasets
    from transformers import AutoTokenizer

    from mixdistill.recipe import TrainRecipe, load_recipe
    from mixdistill.train.data import IGNORE, tokenize
    from mixdistill.train.model import load_tokenizer
    from mixdistill.train.publish import EXAMPLE_INPUT

    recipe_path = write_recipe(tmp_path, student, {"parquet": str(corpus_dir)}, max_steps=1, save_steps=1,
                               prompt_template="Q: {input}\nA:")
    code, _, err = cli("train", str(recipe_path))
    assert code == 0, err
    adapter = tmp_path / "run" / "adapter"
    with fake_hub() as hub:
        code, out, err = cli("push-adapter", str(adapter), "--repo", "org/tiny-md", "--dry-run", "--endpoint", hub.endpoint)
        assert code == 0, err
        assert not hub.repos  # nothing uploaded
    assert "dry run: would upload" in out and "## How to prompt it" in out and "library_name: peft" in out
    # a local base model is named by its folder, not linked as if it were a Hub repo
    assert f"`{student.name}` (a local model folder" in out and "huggingface.co/" + str(student) not in out
    meta = yaml.safe_load(out.split("---")[1])
    assert "base_model" not in meta and meta["mixdistill"]["base_model_local"] == student.name

    snippet = re.search(r"```python\n(.*?)```", out, re.S).group(1)
    snippet = snippet.replace('"org/tiny-md"', repr(str(adapter))).replace(f'"path/to/{student.name}"', repr(str(student)))
    scope: dict = {}
    exec(snippet.replace("max_new_tokens=256", "max_new_tokens=4"), scope)  # the snippet runs as printed

    recipe = load_recipe(recipe_path, TrainRecipe)
    tok = load_tokenizer(recipe)
    row = datasets.Dataset.from_list([{"id": "x", "mode": "pot", "input": EXAMPLE_INPUT, "rationale": "ans = 3 + 4"}])
    encoded, _ = tokenize(row, tok, recipe, "train")
    trained_prompt = [t for t, label in zip(encoded[0]["input_ids"], encoded[0]["labels"]) if label == IGNORE]
    assert scope["ids"] == trained_prompt and trained_prompt[0] == tok.bos_token_id
    plain = AutoTokenizer.from_pretrained(adapter)(scope["prompt"])["input_ids"]
    assert plain != trained_prompt  # what the old snippet did: no BOS for this tokenizer


def test_a_hub_base_model_is_linked():
    from mixdistill.train.publish import is_local_model

    assert not is_local_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert is_local_model("/models/SmolLM2-135M-Instruct") and is_local_model("./tiny student")


def test_bench_train_cpu_measures_the_real_training_path(cli, student, tmp_path):  # noqa: F811
    out_json = tmp_path / "mem.json"
    code, out, err = cli("bench", "train", "--device", "cpu", "--model", str(student), "--steps", "1", "--seq-len", "64",
                         "--batch", "2", "--eval-rows", "4", "--threads", "1", "--json", str(out_json))
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["steps"] == 1 and result["train_tokens"] == 2 * 64 and result["threads"] == 1
    assert {"setup", "train", "evaluate"} <= set(result["phase_peak_rss_mib"])  # the final evaluation ran too
    assert result["peak_rss_mib"] >= max(result["phase_peak_rss_mib"].values()) >= result["baseline_rss_mib"] > 0
    assert "peak RSS" in out
    code, _, err = cli("bench", "train", "--device", "tpu")
    assert code == 2 and "--device: unknown device 'tpu'" in err
