"""The whole evaluation loop with a tiny random Llama on CPU (transformers backend, adapters via peft)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixdistill.evaluate import EvalError, run_eval
from mixdistill.recipe import EvalRecipe
from mixdistill.registry import Registry
from mixdistill.train.tiny import build_tiny_student

QUESTIONS = [f"Tom has {a} apples and buys {b} more. How many apples does he have?" for a, b in
             [(3, 4), (10, 5), (7, 8), (12, 30), (2, 2)]]
STATUSES = {"correct", "wrong-answer", "no-answer", "error", "timeout", "memory", "forbidden", "non-numeric",
            "non-finite"}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """A 64-wide model gains nothing from threads, and on a loaded 2-core machine their spin-waits cost 10-100x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    texts = QUESTIONS + ["[CoT] [PoT] ans = 3 + 4\nThe answer is 7.", "Question: Rationale:"]
    return build_tiny_student(texts, tmp_path_factory.mktemp("tiny") / "student")


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("task") / "apples.jsonl"
    golds = [7, 15, 15, 42, 4]
    path.write_text("\n".join(json.dumps({"question": q, "answer": g}) for q, g in zip(QUESTIONS, golds)))
    return path


def recipe(tiny: Path, task_file: Path, **kw) -> EvalRecipe:
    base = {"name": "tiny", "model": str(tiny), "backend": "transformers",
            "tasks": [{"custom": {"name": "apples", "path": str(task_file), "question": "question", "answer": "answer"}}],
            "k": 3, "sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 10, "seed": 0}, "batch_size": 2}
    return EvalRecipe.model_validate({**base, **kw})


def rows(path: Path, sql: str, params=None) -> list[dict]:
    with Registry.open(path, read_only=True) as reg:
        return reg.query(sql, params).to_dicts()


def outputs(path: Path) -> list[tuple]:
    return [tuple(r.values()) for r in rows(path, "SELECT e.mode, s.problem_id, s.sample_index, s.output, s.status "
                                                  "FROM eval_samples s JOIN evals e USING (eval_id) ORDER BY ALL")]


def test_whole_loop_counts_and_determinism(tiny, task_file, tmp_path):
    r = recipe(tiny, task_file)
    [result] = run_eval(r, tmp_path / "a.duckdb", tmp_path, progress=False)
    assert [m.mode for m in result.modes] == ["cot", "pot", "md"]
    assert result.generated_paths == 5 * 3 * 2 and result.generated_tokens > 0
    counts = rows(tmp_path / "a.duckdb", "SELECT mode, count(*) AS n, count(DISTINCT problem_id) AS problems, "
                                         "max(sample_index) AS last FROM eval_samples GROUP BY mode ORDER BY mode")
    assert counts == [{"mode": "cot", "n": 15, "problems": 5, "last": 2}, {"mode": "pot", "n": 15, "problems": 5, "last": 2}]
    evals = rows(tmp_path / "a.duckdb", "SELECT mode, k, n, rule FROM evals ORDER BY mode")
    assert evals == [{"mode": m, "k": 3, "n": 5, "rule": "strict@2+cot-stated"} for m in ("cot", "md", "pot")]
    inputs = {(r["mode"], r["input"]) for r in rows(tmp_path / "a.duckdb", "SELECT mode, input FROM eval_samples")}
    assert inputs == {(m, f"{prefix} {q}\n") for m, prefix in (("cot", "[CoT]"), ("pot", "[PoT]")) for q in QUESTIONS}
    assert {r["status"] for r in rows(tmp_path / "a.duckdb", "SELECT status FROM eval_samples")} <= STATUSES
    # same seed, fresh registry: the same paths and votes; another seed: other paths
    [again] = run_eval(r, tmp_path / "b.duckdb", tmp_path, progress=False)
    assert outputs(tmp_path / "a.duckdb") == outputs(tmp_path / "b.duckdb")
    assert [m.score for m in again.modes] == [m.score for m in result.modes]
    other = r.model_copy(update={"sampling": r.sampling.model_copy(update={"seed": 1}), "modes": ["cot"]})
    run_eval(other, tmp_path / "c.duckdb", tmp_path, progress=False)
    cot = [o for o in outputs(tmp_path / "a.duckdb") if o[0] == "cot"]
    assert len(outputs(tmp_path / "c.duckdb")) == len(cot) and outputs(tmp_path / "c.duckdb") != cot
    # the k paths of one prompt differ from each other (sampling), and every path has a row
    texts = [o[3] for o in outputs(tmp_path / "a.duckdb") if o[0] == "cot"]
    assert len(set(texts)) > 5


def test_greedy_single_path(tiny, task_file, tmp_path):
    # fp32: in bf16 a matmul's rounding depends on the batch shape, and a random model's near-tied logits flip
    r = recipe(tiny, task_file, k=1, modes=["pot"], batch_size=5, precision="fp32")
    [result] = run_eval(r, tmp_path / "g.duckdb", tmp_path, progress=False)
    assert result.generated_paths == 5 and [m.mode for m in result.modes] == ["pot"]
    # greedy paths do not depend on batching: one problem per call gives the same text
    one = r.model_copy(update={"batch_size": 1})
    run_eval(one, tmp_path / "h.duckdb", tmp_path, progress=False)
    assert outputs(tmp_path / "g.duckdb") == outputs(tmp_path / "h.duckdb")


def _adapter(base: Path, out: Path, *, base_name: str | None = None, hidden: int = 64) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mixdistill.train.tiny import build_tiny_student

    model_dir = base if hidden == 64 else build_tiny_student(QUESTIONS, out.parent / "other")
    if hidden != 64:
        from transformers import LlamaForCausalLM

        config = AutoModelForCausalLM.from_pretrained(model_dir).config
        config.hidden_size, config.intermediate_size = hidden, hidden * 2
        LlamaForCausalLM(config).save_pretrained(model_dir)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(out)
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_name or str(base)
    config_file.write_text(json.dumps(config))
    (out / "training_info.json").write_text(json.dumps({"recipe": {"prompt_template": "Question: {input}\nRationale:"}}))
    return out


def test_adapter_is_prompted_as_trained(tiny, task_file, tmp_path):
    adapter = _adapter(tiny, tmp_path / "run" / "adapter")
    r = recipe(tiny, task_file, adapter=str(adapter), k=1, modes=["cot"])
    [result] = run_eval(r, tmp_path / "a.duckdb", tmp_path, progress=False)
    assert result.generated_paths == 5
    stored = {r["input"] for r in rows(tmp_path / "a.duckdb", "SELECT input FROM eval_samples")}
    assert stored == {f"Question: [CoT] {q}\nRationale:" for q in QUESTIONS}
    evals = rows(tmp_path / "a.duckdb", "SELECT model, summary FROM evals")
    assert evals[0]["model"] == str(adapter.resolve())  # not registered: the adapter folder is the model key
    assert json.loads(evals[0]["summary"])["label"] == "run"
    # the adapter changes the model: its greedy paths differ from the base model's
    base = recipe(tiny, task_file, k=1, modes=["cot"], prompt_template="Question: {input}\nRationale:")
    run_eval(base, tmp_path / "b.duckdb", tmp_path, progress=False)
    assert outputs(tmp_path / "a.duckdb") != outputs(tmp_path / "b.duckdb")


def test_adapter_of_another_base_model(tiny, task_file, tmp_path):
    adapter = _adapter(tiny, tmp_path / "named" / "adapter", base_name="meta-llama/Llama-2-7b-hf")
    with pytest.raises(EvalError, match="was trained on 'meta-llama/Llama-2-7b-hf', not on model"):
        run_eval(recipe(tiny, task_file, adapter=str(adapter), k=1), tmp_path / "r.duckdb", tmp_path, progress=False)
    wrong_shape = _adapter(tiny, tmp_path / "shape" / "adapter", hidden=32)
    with pytest.raises(EvalError, match="does not fit model"):
        run_eval(recipe(tiny, task_file, adapter=str(wrong_shape), k=1), tmp_path / "r.duckdb", tmp_path, progress=False)
    assert not (tmp_path / "r.duckdb").exists() or not rows(tmp_path / "r.duckdb", "SELECT * FROM eval_samples")


def test_few_shot_prompts_for_base_and_chat_models(tiny, task_file, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from mixdistill.prompts import load_prompt

    r = recipe(tiny, task_file, prompt="few-shot", shots=1, k=1, modes=["cot"], sampling={"max_tokens": 4})
    run_eval(r, tmp_path / "a.duckdb", tmp_path, progress=False)
    prompt = load_prompt("gsm8k", "cot", 1)  # a custom numeric task borrows the GSM8K prompts
    stored = {x["input"] for x in rows(tmp_path / "a.duckdb", "SELECT input FROM eval_samples")}
    assert stored == {prompt.completion(q) for q in QUESTIONS}  # no chat template: one completion text
    chat_dir = shutil.copytree(tiny, tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(chat_dir)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    tok.save_pretrained(chat_dir)
    run_eval(r.model_copy(update={"model": str(chat_dir)}), tmp_path / "b.duckdb", tmp_path, progress=False)
    stored = [json.loads(x["input"]) for x in rows(tmp_path / "b.duckdb", "SELECT input FROM eval_samples")]
    assert sorted(m[-1]["content"] for m in stored) == sorted(prompt.user_message(q) for q in QUESTIONS)
    assert all(len(m) == 4 and m[0]["role"] == "system" for m in stored)


def test_resumed_sampling_run_draws_the_same_paths(tiny, task_file, tmp_path):
    from mixdistill.evaluate.backends import TransformersBackend

    class Killed(TransformersBackend):
        calls = 0

        def generate(self, batch, k):
            Killed.calls += 1
            if Killed.calls == 2:
                raise KeyboardInterrupt
            return super().generate(batch, k)

    r = recipe(tiny, task_file, modes=["cot"])  # k=3 sampled, 3 batches of at most 2 problems
    with pytest.raises(KeyboardInterrupt):
        run_eval(r, tmp_path / "a.duckdb", tmp_path, progress=False, backend=Killed(r))
    assert len(outputs(tmp_path / "a.duckdb")) == 0  # no summary yet: the join on evals is empty
    assert rows(tmp_path / "a.duckdb", "SELECT count(*) AS n FROM eval_samples") == [{"n": 6}]
    [resumed] = run_eval(r, tmp_path / "a.duckdb", tmp_path, progress=False)
    assert resumed.generated_paths == 9
    run_eval(r, tmp_path / "b.duckdb", tmp_path, progress=False)
    assert outputs(tmp_path / "a.duckdb") == outputs(tmp_path / "b.duckdb")
