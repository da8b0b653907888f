"""Student training on a CPU: a tiny random Llama, a BPE tokenizer trained on a hand-made mixed CoT/PoT corpus."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from mixdistill.recipe import CorpusRef, TrainRecipe, load_recipe  # noqa: E402
from mixdistill.registry import Registry  # noqa: E402
from mixdistill.train.data import (  # noqa: E402
    IGNORE,
    TrainError,
    encode_example,
    format_prompt,
    load_corpus,
    select_rows,
    tokenize,
)
from mixdistill.train.tiny import build_tiny_student  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "recipes" / "train-tiny-cpu.yaml"


def corpus_rows(svamp: list[dict], split: str) -> list[dict]:
    """One CoT and one PoT row per SVAMP problem, in the corpus schema, with simple rationales written here."""
    rows = []
    for p in svamp:
        question = f"{p['Body'].strip()} {p['Question'].strip()}"
        answer = f"{float(p['Answer']):g}"
        eq = p["Equation"].strip()
        rationales = {
            "cot": f"We compute {eq} = {answer}. The answer is {answer}.",
            "pot": f"ans = {eq}\nprint(ans)",
        }
        for mode, rationale in rationales.items():
            rows.append({
                "id": f"{p['ID']}-{mode}", "problem_id": p["ID"], "task": "svamp", "question": question, "mode": mode,
                "input": f"[{'CoT' if mode == 'cot' else 'PoT'}] {question}", "rationale": rationale, "answer": answer,
                "gold": answer, "teacher": "hand", "prompt_id": "p0", "rule": "strict", "request_key": f"rk-{p['ID']}-{mode}",
            })
    return rows


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """A Parquet export laid out `<config>/<split>-00000-of-00001.parquet` (train: 24 problems, validation: 4)."""
    import os

    data = Path(os.environ["MIXDISTILL_DATA"]) / "svamp" / "SVAMP.json"
    if not data.is_file():
        pytest.skip(f"SVAMP not found at {data}")
    svamp = json.loads(data.read_text())
    out = tmp_path_factory.mktemp("corpus")
    for split, problems in (("train", svamp[:24]), ("validation", svamp[24:28])):
        rows = corpus_rows(problems, split)
        for config in ("mixed", "cot", "pot"):
            keep = [r for r in rows if config == "mixed" or r["mode"] == config]
            (out / config).mkdir(exist_ok=True)
            pl.DataFrame(keep).write_parquet(out / config / f"{split}-00000-of-00001.parquet")
    return out


@pytest.fixture(scope="module")
def student(corpus_dir, tmp_path_factory) -> Path:
    rows = pl.read_parquet(corpus_dir / "mixed" / "train-00000-of-00001.parquet")
    texts = [f"{a}\n{b}" for a, b in zip(rows["input"], rows["rationale"])]
    return build_tiny_student(texts, tmp_path_factory.mktemp("student"))


def tiny_recipe(student: Path, corpus_dir: Path, out: Path, **update) -> TrainRecipe:
    """The repository's tiny CPU recipe, pointed at this test's student, corpus and output folder."""
    recipe = load_recipe(TINY_RECIPE, TrainRecipe)
    fields = {"student": str(student), "corpus": CorpusRef(parquet=corpus_dir), "output_dir": out, **update}
    return recipe.model_copy(update=fields)


def test_label_mask_is_exactly_the_rationale(student, corpus_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student)
    prompt = format_prompt("{input}\n", "[PoT] Tom has 3 apples and buys 4. How many?")
    ids, labels = encode_example(tok, prompt, "ans = 3 + 4")
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"]) + 1  # + BOS
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(ids[n_prompt:], skip_special_tokens=True) == "ans = 3 + 4"
    assert tok.decode(ids[:n_prompt], skip_special_tokens=True) == prompt

    recipe = tiny_recipe(student, corpus_dir, tmp_path)
    corpus = load_corpus(recipe.corpus, recipe, None)
    encoded, report = tokenize(corpus.train, tok, recipe, "train")
    assert report.total_dropped == 0 and encoded.num_rows == corpus.train.num_rows == 48
    for row, ex in zip(corpus.train.select(range(4)), encoded.select(range(4))):
        target = [t for t, l in zip(ex["input_ids"], ex["labels"]) if l != IGNORE]
        assert tok.decode(target, skip_special_tokens=True) == row["rationale"]
        assert target[-1] == tok.eos_token_id


def test_overlength_rows_are_counted_never_truncated(student, corpus_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student)
    recipe = tiny_recipe(student, corpus_dir, tmp_path)
    train = load_corpus(recipe.corpus, recipe, None).train
    lengths = sorted(len(encode_example(tok, format_prompt("{input}\n", r["input"]), r["rationale"])[0]) for r in train)
    cut = lengths[len(lengths) // 2]
    short = recipe.model_copy(update={"max_length": cut})
    encoded, report = tokenize(train, tok, short, "train")
    assert report.total_dropped == sum(n > cut for n in lengths) > 0
    assert encoded.num_rows == report.kept and max(encoded["length"]) <= cut
    assert all(ex["input_ids"][-1] == tok.eos_token_id for ex in encoded)  # every kept answer is whole
    assert f"max_length {cut}" in report.message("train")
    with pytest.raises(TrainError, match="overlength: drop"):
        tokenize(train, tok, short.model_copy(update={"overlength": "error"}), "train")


def test_mode_mix_and_single_path_configs(student, corpus_dir, tmp_path):
    recipe = tiny_recipe(student, corpus_dir, tmp_path, mode_mix={"cot": 3, "pot": 1})
    train = load_corpus(recipe.corpus, recipe, None).train
    mixed = select_rows(train, recipe)
    assert mixed["mode"].count("cot") == 24 and mixed["mode"].count("pot") == 8
    assert select_rows(train, recipe)["id"] == mixed["id"]  # seeded
    pot_only = tiny_recipe(student, corpus_dir, tmp_path, corpus=CorpusRef(parquet=corpus_dir, config="pot"))
    assert set(load_corpus(pot_only.corpus, pot_only, None).train["mode"]) == {"pot"}


def test_registry_corpus_version(student, corpus_dir, tmp_path, registry_path, shared_data):
    from test_corpus import fill, recipe as build_recipe  # a registry as a corpus build leaves it

    from mixdistill.corpus import build_version
    from mixdistill.errors import MixdistillError

    recipe = tiny_recipe(student, corpus_dir, tmp_path, corpus=CorpusRef(name="svamp-md", version="1.0.0"))
    with pytest.raises(TrainError, match="no registry"):
        load_corpus(recipe.corpus, recipe, registry_path)
    with Registry.open(registry_path) as reg:
        fill(reg, shared_data)
        version, frames = build_version(reg, build_recipe())
    loaded = load_corpus(recipe.corpus, recipe, registry_path)  # rows rebuilt from the registry alone
    assert loaded.corpus_id == version.corpus_id and loaded.label == "svamp-md@1.0.0"
    expected = frames["mixed"]
    assert sorted([*loaded.train["id"], *loaded.eval["id"]]) == sorted(expected["id"])
    assert set(loaded.train["mode"]) == {"cot", "pot"} and loaded.train[0]["input"].startswith("[")

    missing = recipe.model_copy(update={"corpus": CorpusRef(name="svamp-md", version="9.9.9")})
    with pytest.raises(MixdistillError, match=r"svamp-md@9.9.9 does not exist; versions of svamp-md: 1.0.0"):
        load_corpus(missing.corpus, missing, registry_path)
    # a Parquet export named next to the version must hold exactly that version's rows
    mismatched = recipe.model_copy(update={"corpus": CorpusRef(name="svamp-md", version="1.0.0", parquet=corpus_dir)})
    with pytest.raises(TrainError, match="re-export"):
        load_corpus(mismatched.corpus, mismatched, registry_path)


def test_pad_token_fallback_and_bad_pad_token(student, corpus_dir, tmp_path):
    from mixdistill.train.model import load_tokenizer

    recipe = tiny_recipe(student, corpus_dir, tmp_path)
    tok = load_tokenizer(recipe)
    assert tok.pad_token == "<unk>"  # like Llama-2: no pad token, unk stands in (padding is masked anyway)
    with pytest.raises(TrainError, match="pad_token"):
        load_tokenizer(recipe.model_copy(update={"pad_token": "<not-a-token>"}))


def _loss_history(output_dir: Path) -> list[dict]:
    state = json.loads(max(output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])).read_text())
    return [h for h in state["log_history"] if "loss" in h]


def test_training_lowers_loss_registers_and_reloads(student, corpus_dir, tmp_path, registry_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from mixdistill.train.run import INFO_FILE, train

    recipe = tiny_recipe(student, corpus_dir, tmp_path / "run", max_steps=12, save_steps=12)
    result = train(recipe, registry_path)
    history = _loss_history(tmp_path / "run")
    losses = [h["loss"] for h in history]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] - 0.2  # batch noise is ~0.05 here
    assert {"loss_cot", "loss_pot"} <= set(history[0])
    assert "eval_loss_cot" in result.metrics and "eval_loss_pot" in result.metrics

    with Registry.open(registry_path, read_only=True) as reg:
        run = reg.query("SELECT * FROM runs").row(0, named=True)
        model = reg.query("SELECT * FROM models").row(0, named=True)
    assert run["kind"] == "train" and run["status"] == "done" and run["finished_at"] is not None
    assert model["run_id"] == run["run_id"] and model["base_model"] == str(student)
    assert model["adapter_path"] == str(result.adapter_path.resolve())
    assert json.loads(model["metrics"])["global_step"] == 12
    assert json.loads((result.adapter_path / INFO_FILE).read_text())["corpus"]["config"] == "mixed"

    tok = AutoTokenizer.from_pretrained(result.adapter_path)
    reloaded = AutoPeftModelForCausalLM.from_pretrained(result.adapter_path)
    prompt = tok("[CoT] Tom has 3 apples.\n", return_tensors="pt")
    out = reloaded.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    # the adapter changed the model: its output differs from the base model's on the same input
    base = reloaded.get_base_model()
    with torch.no_grad():
        with reloaded.disable_adapter():
            plain = base(**prompt).logits
        adapted = reloaded(**prompt).logits
    assert not torch.allclose(plain, adapted)


def test_resume_continues_from_same_step_and_data_position(student, corpus_dir, tmp_path, registry_path, monkeypatch):
    import mixdistill.train.run as run_module
    from mixdistill.train.run import train

    steps = dict(max_steps=6, save_steps=3, logging_steps=1, eval_split=None, save_total_limit=None)
    full = tiny_recipe(student, corpus_dir, tmp_path / "full", **steps)
    train(full, None)
    reference = _loss_history(tmp_path / "full")

    class KillAtStep5(run_module.RichProgress):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise KeyboardInterrupt  # a kill after checkpoint-3 was written
            return super().on_step_end(args, state, control, **kwargs)

    killed = tiny_recipe(student, corpus_dir, tmp_path / "killed", **steps)
    monkeypatch.setattr(run_module, "RichProgress", KillAtStep5)
    with pytest.raises(KeyboardInterrupt):
        train(killed, registry_path)
    with Registry.open(registry_path, read_only=True) as reg:
        assert reg.query("SELECT status FROM runs")["status"].to_list() == ["interrupted"]  # a stop
    monkeypatch.undo()
    result = train(killed, registry_path)  # the same command again picks up checkpoint-3
    assert result.resumed_from.endswith("checkpoint-3")
    resumed = _loss_history(tmp_path / "killed")
    assert [h["step"] for h in resumed] == list(range(1, 7))
    # same batches in the same order with the same optimiser state: the same losses step for step
    assert [h["loss"] for h in resumed[3:]] == pytest.approx([h["loss"] for h in reference[3:]], rel=1e-4)


def test_shipped_recipes_validate():
    """One command per paper comparison: the MD students train on both modes, the baselines on one."""
    configs = {}
    for path in sorted((REPO / "recipes").glob("train-*.yaml")):
        recipe = load_recipe(path, TrainRecipe)
        configs[path.stem] = recipe.corpus.config
        assert recipe.mode_weights == {"cot": 1.0, "pot": 1.0}
    assert configs["train-llama2-7b-md"] == configs["train-codellama-7b-md"] == configs["train-mistral-7b-md"] == "mixed"
    assert configs["train-llama2-7b-cot"] == "cot" and configs["train-llama2-7b-pot"] == "pot"


def test_weighted_loss_is_the_multi_task_loss():
    from mixdistill.train.loss import token_losses, weighted_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 5], [IGNORE, 7, 8, IGNORE, IGNORE]])
    mode = torch.tensor([0, 1])  # row 0 is CoT, row 1 is PoT
    token_loss, valid = token_losses(logits, labels)
    ce = torch.nn.functional.cross_entropy
    cot = ce(logits[0, 1:4], labels[0, 2:5], reduction="sum")
    pot = ce(logits[1, 0:2], labels[1, 1:3], reduction="sum")
    assert valid.sum() == 5
    for w_cot, w_pot in ((1.0, 1.0), (1.0, 0.0), (0.5, 2.0)):
        got = weighted_loss(token_loss, valid, mode, torch.tensor([w_cot, w_pot]))
        assert got == pytest.approx(float((w_cot * cot + w_pot * pot) / 5), rel=1e-5)
    # with gradient accumulation the denominator is the token count of the whole accumulated batch
    assert weighted_loss(token_loss, valid, mode, torch.ones(2), denom=10) == pytest.approx(float((cot + pot) / 10), rel=1e-5)


def test_qlora_and_oom_give_the_setting_to_change(student, corpus_dir, tmp_path, registry_path, monkeypatch):
    from mixdistill.train import run as run_module
    from mixdistill.train.model import load_student, load_tokenizer, resolve_precision

    recipe = tiny_recipe(student, corpus_dir, tmp_path)
    qlora = recipe.model_copy(update={"lora": recipe.lora.model_copy(update={"qlora": True})})
    if not torch.cuda.is_available():
        with pytest.raises(TrainError, match="lora.qlora"):
            load_student(qlora, load_tokenizer(qlora), resolve_precision("fp32"))
        monkeypatch.setattr("mixdistill.cpu.cpu_has_bf16", lambda: False)
        with pytest.raises(TrainError, match="precision: bf16 on a CPU needs native bf16"):
            resolve_precision("bf16")
        monkeypatch.setattr("mixdistill.cpu.cpu_has_bf16", lambda: True)  # AMX / AVX512-BF16: bf16 autocast allowed
        assert resolve_precision("bf16").name == "bf16"
        assert resolve_precision("auto").name == "fp32"  # never the CPU default: it changes a run's numbers

    def out_of_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(run_module.MixTrainer, "train", out_of_memory)
    with pytest.raises(TrainError, match="out of GPU memory at batch_size 8, max_length 256: lower batch_size"):
        run_module.train(recipe, registry_path)
    with Registry.open(registry_path, read_only=True) as reg:
        status, error = reg.query("SELECT status, error FROM runs").row(0)
    assert status == "failed" and "out of GPU memory" in error


def test_window_losses_are_the_objective_over_all_tokens():
    from mixdistill.train.loss import token_losses, weighted_loss, window_losses

    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 11, generator=gen)
    labels = torch.tensor([[IGNORE, 1, 2, 3, 4, 5], [IGNORE, IGNORE, 7, IGNORE, IGNORE, IGNORE], [IGNORE, 2, 2, 2, IGNORE, IGNORE]])
    mode = torch.tensor([0, 1, 1])
    token_loss, valid = token_losses(logits, labels)
    sums = torch.stack([(token_loss * valid)[mode == m].sum() for m in (0, 1)])
    counts = torch.stack([valid[mode == m].sum() for m in (0, 1)]).double()
    for weights in (torch.ones(2), torch.tensor([0.5, 2.0])):
        got = window_losses(sums, counts, weights, ("cot", "pot"))
        assert got["loss"] == pytest.approx(float(weighted_loss(token_loss, valid, mode, weights)), rel=1e-6)
    got = window_losses(sums, counts, torch.ones(2), ("cot", "pot"))
    # weights 1: the token-weighted mean of the two modes (5 CoT tokens, 4 PoT tokens), not their plain mean
    assert counts.tolist() == [5, 4]
    assert got["loss"] == pytest.approx((5 * got["loss_cot"] + 4 * got["loss_pot"]) / 9, rel=1e-9)
    assert window_losses(sums[:1], counts[:1] * 0, torch.ones(1), ("cot",)) == {}


def test_logged_losses_share_the_token_basis(student, corpus_dir, tmp_path):
    from mixdistill.train.run import train

    mixed = tiny_recipe(student, corpus_dir, tmp_path / "mixed", max_steps=3, save_steps=3, logging_steps=1,
                        batch_size=4, gradient_accumulation=2, eval_steps=3)
    result = train(mixed, None)
    history = _loss_history(tmp_path / "mixed")
    assert len(history) == 3
    for h in history:  # the overall loss of every log lies between its modes' losses
        assert min(h["loss_cot"], h["loss_pot"]) - 1e-4 <= h["loss"] <= max(h["loss_cot"], h["loss_pot"]) + 1e-4
    m = result.metrics
    assert min(m["eval_loss_cot"], m["eval_loss_pot"]) - 1e-4 <= m["eval_loss"] <= max(m["eval_loss_cot"], m["eval_loss_pot"]) + 1e-4
    pot_only = tiny_recipe(student, corpus_dir, tmp_path / "pot", corpus=CorpusRef(parquet=corpus_dir, config="pot"),
                           max_steps=3, save_steps=3, logging_steps=3, batch_size=2)
    m = train(pot_only, None).metrics
    # one mode: one number, although the 3 logged steps and the 2 eval batches hold different numbers of tokens
    # (a mean of per-step or per-batch losses would differ from the mode's token mean)
    assert m["loss"] == m["loss_pot"] and m["eval_loss"] == m["eval_loss_pot"] and "eval_loss_cot" not in m


def test_evaluation_keeps_no_logits_and_the_loss_copies_none(student, corpus_dir, tmp_path):
    """Memory: the Trainer's evaluation returns no predictions (it would keep every batch's logits), and the loss
    reads the logits in place (float32 logits are not copied, not even a shifted slice of them)."""
    from mixdistill.train.data import Collator
    from mixdistill.train.loss import token_losses
    from mixdistill.train.model import load_student, load_tokenizer, resolve_precision
    from mixdistill.train.trainer import MixTrainer, training_arguments

    recipe = tiny_recipe(student, corpus_dir, tmp_path)
    tok = load_tokenizer(recipe)
    corpus = load_corpus(recipe.corpus, recipe, None)
    evals, _ = tokenize(corpus.eval, tok, recipe, "validation")
    precision = resolve_precision("fp32")
    trainer = MixTrainer(model=load_student(recipe, tok, precision), args=training_arguments(recipe, precision, True),
                         eval_dataset=evals, data_collator=Collator(tok.pad_token_id), mode_weights=recipe.mode_weights)
    out = trainer.predict(evals)
    assert out.predictions is None and out.metrics["test_loss"] > 0

    logits = torch.randn(4, 16, 50, requires_grad=True)
    labels = torch.randint(0, 50, (4, 16))
    labels[:, :3] = IGNORE
    token_loss, valid = token_losses(logits, labels)
    assert token_loss.shape == valid.shape == (4, 16) and int(valid.sum()) == 4 * 13 and not valid[:, -1].any()
    expected = torch.nn.functional.cross_entropy(logits.detach()[:, 2:15].reshape(-1, 50), labels[:, 3:16].reshape(-1),
                                                 reduction="sum")
    assert float(token_loss.detach().sum()) == pytest.approx(float(expected), rel=1e-5)
    assert logits_sized_allocations(lambda: token_losses(logits, labels), logits) == 1  # log-softmax's output only


def logits_sized_allocations(fn, logits) -> int:
    """How many new tensors of (nearly) the logits' size the ops inside `fn` allocate (views do not count)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    big = logits.numel() - logits.shape[0] * logits.shape[-1]  # a slice of one position less is still "logits-sized"

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.numel() >= big and t.untyped_storage().data_ptr() not in inputs:
                    Count.n += 1
            return out

    with Count():
        fn()
    return Count.n


def test_hidden_state_loss_equals_the_logits_loss_and_its_gradient():
    from mixdistill.train.loss import hidden_token_losses, token_losses

    gen = torch.Generator().manual_seed(2)
    head = torch.nn.Linear(8, 30, bias=False)
    hidden = torch.randn(3, 7, 8, generator=gen, requires_grad=True)
    labels = torch.randint(0, 30, (3, 7), generator=gen)
    labels[:, :2] = IGNORE
    labels[2, 5:] = IGNORE  # padding
    ref_loss, ref_valid = token_losses(head(hidden), labels)
    (ref_loss * ref_valid).sum().backward()
    ref_grad, hidden.grad = hidden.grad.clone(), None
    got_loss, got_valid = hidden_token_losses(hidden, head, labels, chunk_tokens=4)  # several chunks
    (got_loss * got_valid).sum().backward()
    assert torch.equal(got_valid, ref_valid)
    assert torch.allclose(got_loss, ref_loss * ref_valid, atol=1e-6)
    assert torch.allclose(hidden.grad, ref_grad, atol=1e-6)


def _cpu_bf16() -> bool:
    from mixdistill.cpu import cpu_has_bf16

    return cpu_has_bf16()


@pytest.mark.skipif(torch.cuda.is_available() or not _cpu_bf16(), reason="bf16 on a CPU needs AMX / AVX512-BF16")
def test_bf16_training_on_a_cpu_with_native_bf16(student, corpus_dir, tmp_path, registry_path):
    """`precision: bf16` on such a CPU: bf16 weights under autocast, the loss still falls, the adapter is usable."""
    from mixdistill.train.run import train

    recipe = tiny_recipe(student, corpus_dir, tmp_path / "run", max_steps=12, save_steps=12, precision="bf16")
    result = train(recipe, registry_path)
    losses = [h["loss"] for h in _loss_history(tmp_path / "run")]
    assert losses[-1] < losses[0] - 0.2
    from safetensors.torch import load_file

    weights = load_file(result.adapter_path / "adapter_model.safetensors")
    assert any("lora_B" in name and t.abs().sum() > 0 for name, t in weights.items())  # B starts at zero
