"""`mixdistill train` on a CUDA GPU with a tiny student: bf16 autocast, fp16 with loss scaling, gradient
checkpointing and regional torch.compile, through the same Trainer path as a 7B run. Skipped without a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from mixdistill.recipe import CorpusRef, TrainRecipe, load_recipe  # noqa: E402
from mixdistill.train.run import train  # noqa: E402
from mixdistill.train.tiny import build_tiny_student  # noqa: E402

TINY_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "train-tiny-cpu.yaml"


def arithmetic_rows(start: int, n: int) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        a, b = 3 + i % 17, 5 + (7 * i) % 23
        q = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        for mode, rationale in (("cot", f"Tom has {a} + {b} = {a + b} apples. The answer is {a + b}."),
                                ("pot", f"ans = {a} + {b}")):
            rows.append({"id": f"{i}-{mode}", "mode": mode, "input": f"[{'CoT' if mode == 'cot' else 'PoT'}] {q}",
                         "rationale": rationale})
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    (root / "corpus" / "mixed").mkdir(parents=True)
    train_rows, val_rows = arithmetic_rows(0, 64), arithmetic_rows(64, 8)
    for split, rows in (("train", train_rows), ("validation", val_rows)):
        pq.write_table(pa.Table.from_pylist(rows), root / "corpus" / "mixed" / f"{split}.parquet")
    student = build_tiny_student([f"{r['input']}\n{r['rationale']}" for r in train_rows], root / "student")
    return root, student


@pytest.mark.parametrize("precision,compile_,checkpointing", [("bf16", True, True), ("fp16", False, False)])
def test_train_on_gpu(setup, precision, compile_, checkpointing):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    root, student = setup
    base = load_recipe(TINY_RECIPE, TrainRecipe)
    out = root / f"run-{precision}"
    recipe = base.model_copy(update={
        "student": str(student), "corpus": CorpusRef(parquet=root / "corpus"), "output_dir": out,
        "precision": precision, "compile": compile_, "gradient_checkpointing": checkpointing,
        "max_steps": 24, "save_steps": 12, "eval_steps": 12, "logging_steps": 4,
    })
    result = train(recipe, None)
    state = json.loads((out / "checkpoint-24" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < losses[0] - 0.3, losses  # batch-to-batch noise is ~0.05 here
    assert {"loss_cot", "loss_pot"} <= set(state["log_history"][0])
    assert {"eval_loss_cot", "eval_loss_pot"} <= set(result.metrics)

    tok = AutoTokenizer.from_pretrained(result.adapter_path)
    model = AutoPeftModelForCausalLM.from_pretrained(result.adapter_path, dtype=torch.bfloat16).cuda()
    prompt = tok("[PoT] Tom has 4 apples and buys 6 more. How many apples does he have?\n", return_tensors="pt").to("cuda")
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
