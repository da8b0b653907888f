"""The local transformers teacher: batched generate on a tiny random Llama built here, and on a real small model dir
when one is given (MIXDISTILL_TEST_SMOLLM=path/to/SmolLM2-135M-Instruct)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakes.recipes import recipe, synthetic_task
from mixdistill.generate import plan_generation, run_generation
from mixdistill.prompts import load_prompt
from mixdistill.registry import Registry
from mixdistill.teachers import TeacherError

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer random-init Llama and a byte-level BPE tokenizer trained on our own prompt text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [load_prompt(t, m, 4).completion("How many pens does Sam have?") for t in ("svamp", "gsm8k") for m in ("cot", "pot")]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def local(path: Path, **kw) -> dict:
    return {"provider": "transformers", "model": "tiny-llama", "path": str(path), "batch_size": 4, **kw}


def test_batched_generate_stores_every_sample_and_is_cached(tiny_llama, tmp_path, registry_path):
    r = recipe([synthetic_task(tmp_path, 3)], [local(tiny_llama)], samples={"cot": 2, "pot": 1},
               sampling={"temperature": 0.7, "max_tokens": 12, "seed": 0}, shots=1)
    with Registry.open(registry_path) as reg:
        report = run_generation(reg, r, progress=False)
        df = reg.query("SELECT * FROM generations")
        again = run_generation(reg, r, progress=False)
    assert (report.ok, report.errors) == (9, 0)
    assert df["status"].unique().to_list() == ["ok"]
    assert (df["prompt_tokens"] > 100).all() and (df["completion_tokens"] <= 13).all()
    assert df["cost_usd"].sum() == 0 and set(df["finish_reason"]) <= {"stop", "length"}
    assert (again.cached, again.sent) == (9, 0)


def test_greedy_is_deterministic_and_base_models_get_the_completion_prompt(tiny_llama, tmp_path, registry_path):
    r = recipe([synthetic_task(tmp_path, 2)], [local(tiny_llama)], modes=["cot"], samples={"cot": 2},
               sampling={"temperature": 0, "max_tokens": 8}, shots=1)
    plan = plan_generation(r)
    (teacher,) = plan.teachers
    req = plan.requests[teacher.teacher_id][0]
    assert not teacher.chat and teacher.render(req) == req.prompt.completion(req.question)
    with Registry.open(registry_path) as reg:
        run_generation(reg, r, progress=False, plan=plan)
        texts = reg.query("SELECT problem_id, list(response_text ORDER BY sample_index) AS t FROM generations GROUP BY 1")
    assert all(t[0] == t[1] for t in texts["t"])


def test_a_chat_template_is_used_when_the_tokenizer_has_one(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    chat_dir = tmp_path / "chat-model"
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    tok.save_pretrained(chat_dir)
    for f in tiny_llama.iterdir():
        if not (chat_dir / f.name).exists():
            (chat_dir / f.name).write_bytes(f.read_bytes())
    r = recipe([synthetic_task(tmp_path, 1)], [local(chat_dir)], modes=["pot"], samples={"pot": 1}, shots=1)
    plan = plan_generation(r)
    (teacher,) = plan.teachers
    req = plan.requests[teacher.teacher_id][0]
    rendered = teacher.render(req)
    assert teacher.chat and rendered.startswith("<system>") and rendered.endswith("<assistant>")


def test_a_path_that_is_not_a_model_is_one_clear_line(tmp_path):
    r = recipe([synthetic_task(tmp_path, 1)], [local(tmp_path / "nowhere")])
    with pytest.raises(TeacherError, match="is not a model directory"):
        plan_generation(r)


@pytest.mark.skipif(not os.environ.get("MIXDISTILL_TEST_SMOLLM"), reason="set MIXDISTILL_TEST_SMOLLM to a model dir")
def test_real_small_instruct_model(tmp_path, registry_path):
    r = recipe([synthetic_task(tmp_path, 2)], [local(Path(os.environ["MIXDISTILL_TEST_SMOLLM"]), model="smollm2")],
               samples={"cot": 1, "pot": 1}, sampling={"temperature": 0, "max_tokens": 48}, shots=2)
    with Registry.open(registry_path) as reg:
        report = run_generation(reg, r, progress=False)
        texts = reg.query("SELECT mode, response_text FROM generations ORDER BY mode").to_dicts()
    assert report.ok == 4
    assert all(t["response_text"].strip() for t in texts)


def test_weights_that_cannot_load_stop_the_build_with_one_line(tiny_llama, tmp_path, registry_path):
    from mixdistill.teachers import TeacherFatalError

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_llama.iterdir():
        (broken / f.name).write_bytes(b"not weights" if f.suffix == ".safetensors" else f.read_bytes())
    r = recipe([synthetic_task(tmp_path, 2)], [local(broken)], modes=["cot"], samples={"cot": 1})
    with Registry.open(registry_path) as reg:
        with pytest.raises(TeacherFatalError, match="cannot load the model in"):
            run_generation(reg, r, progress=False)
