"""`mixdistill bench eval`: generated tokens/s for k sampled paths per problem, through the evaluation backends.

The model has random weights (nothing to download): `tiny` is the 2-layer test Llama (CPU), `llama2-7b` has
Llama-2-7B's shape (4096 hidden, 32 layers, 32 heads, 11008 MLP) with the locally trained test tokenizer's vocabulary
(about 600 tokens instead of 32000: the output layer is under 2% of a 7B model's FLOPs). vLLM builds the same shape
with `load_format="dummy"`. Prompts are SVAMP questions in the student format when the data is there, else made-up
ones; `shots` > 0 puts them in the base model's few-shot CoT prompt instead (a long prefix shared by every prompt,
what the decoding loop's cascade attention is for). Tokens are counted up to each path's end-of-sequence (what an
evaluation actually uses).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mixdistill.evaluate.backends import EvalError, TransformersBackend, VLLMBackend
from mixdistill.recipe import EvalRecipe, Sampling, TaskRef
from mixdistill.tasks import Problem

SHAPES = {
    "tiny": {"hidden": 64, "layers": 2, "heads": 4},
    "llama2-7b": {"hidden": 4096, "layers": 32, "heads": 32, "intermediate": 11008},
}


@dataclass
class BenchRow:
    backend: str
    shape: str  # a random shape's name, or the local model folder's name
    decoder: str  # transformers: fast | generate (vllm: its own)
    dtype: str
    threads: int
    problems: int
    k: int
    batch: int
    max_tokens: int
    paths: int
    shots: int
    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def bench_problems(data_dir: Path | None, n: int) -> list[Problem]:
    from mixdistill.errors import TaskError
    from mixdistill.tasks import load_problems

    try:
        _, problems = load_problems("svamp", "test", data_dir) if data_dir else (None, [])
    except TaskError:
        problems = []
    if len(problems) >= n:
        return problems[:n]
    return [Problem.make(task="bench", question=f"Tom has {i + 3} apples and buys {2 * i + 5} more. How many apples "
                         "does he have now?", gold=float(3 * i + 8), gold_text=str(3 * i + 8), source="bench",
                         source_id=str(i), license="none") for i in range(n)]


def build_model(shape: str, workdir: Path, texts: list[str]) -> Path:
    """Write a random-init model of `shape` (weights only for `tiny`; the 7B shape is config + tokenizer, its
    weights are made on the device by each backend) and return its folder."""
    from mixdistill.train.tiny import build_tokenizer, tiny_llama_config

    tok = build_tokenizer(texts)
    spec = SHAPES[shape]
    # the vocabulary is exactly the tokenizer's: every id a random model samples can be decoded (vLLM detokenises)
    config = tiny_llama_config(len(tok), hidden=spec["hidden"], layers=spec["layers"], heads=spec["heads"], max_positions=4096)
    if "intermediate" in spec:
        config.intermediate_size = spec["intermediate"]
    config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    out = workdir / shape
    tok.save_pretrained(out)
    if shape == "tiny":
        import torch
        from transformers import LlamaForCausalLM

        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
    else:
        config.torch_dtype = "bfloat16"
        config.save_pretrained(out)
    return out


def _recipe(model: Path, k: int, max_tokens: int, batch: int, backend: str, variant: tuple[str, str],
            shots: int = 0) -> EvalRecipe:
    decoder, precision = variant
    return EvalRecipe(name="bench", model=str(model), backend=backend, tasks=[TaskRef(task="svamp")], k=k,
                      batch_size=batch, sampling=Sampling(temperature=0.7, top_p=0.95, max_tokens=max_tokens, seed=0),
                      decoder=decoder, precision=precision, prompt="few-shot" if shots else "student",
                      shots=shots)


def parse_variant(text: str) -> tuple[str, str]:
    """`DECODER:PRECISION` (e.g. `generate:fp32`, `fast:bf16`; either part may be left out)."""
    decoder, _, precision = text.partition(":")
    decoder, precision = decoder or "fast", precision or "auto"
    if decoder not in ("fast", "generate") or precision not in ("auto", "bf16", "fp32"):
        raise EvalError(f"--variant: {text!r} is not DECODER:PRECISION with DECODER fast|generate and PRECISION "
                        "auto|bf16|fp32")
    return decoder, precision


def _transformers(recipe: EvalRecipe, shape: str) -> TransformersBackend:
    """The backend with the model loaded (tiny) or made with random weights on the GPU (7B shape)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    backend = TransformersBackend(recipe)
    if shape == "tiny":
        backend.check()
        return backend
    if not torch.cuda.is_available():
        raise EvalError("bench eval --shape llama2-7b needs a CUDA GPU (use --shape tiny on a CPU)")
    from mixdistill.evaluate.backends import load_eval_tokenizer

    backend._torch, backend.chat = torch, False
    backend.tokenizer = load_eval_tokenizer(recipe)
    with torch.device("cuda"):
        backend.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(recipe.model), dtype=torch.bfloat16)
    backend.model.generation_config.pad_token_id = backend.tokenizer.pad_token_id
    backend.model.eval()
    return backend


def _vllm(recipe: EvalRecipe, shape: str) -> VLLMBackend:
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise EvalError("backend vllm: the vllm package is not installed (pip install vllm, on a CUDA machine)") from None
    from mixdistill.evaluate.backends import load_eval_tokenizer

    backend = VLLMBackend(recipe)
    backend._sampling_params, backend.lora, backend.chat = SamplingParams, None, False
    backend.tokenizer = load_eval_tokenizer(recipe)
    backend.llm = LLM(model=recipe.model, load_format="dummy", dtype="bfloat16" if shape != "tiny" else "float32", seed=0)
    return backend


def run_backend(name: str, shape: str, model: Path, problems: list[Problem], k: int, max_tokens: int,
                batches: list[int], threads: list[int], label: str | None = None,
                variant: tuple[str, str] = ("fast", "auto"), shots: int = 0) -> list[BenchRow]:
    """One backend and variant (one model load: vLLM keeps most of the GPU until the process ends), timed at each
    batch size and torch CPU thread count."""
    import torch

    from mixdistill.cpu import set_threads

    recipe = _recipe(model, k, max_tokens, max(batches), name, variant, shots)
    backend = _transformers(recipe, shape) if name == "transformers" else _vllm(recipe, shape)
    decoder = recipe.decoder if name == "transformers" else name
    dtype = str(getattr(backend, "model", None).dtype if name == "transformers" else "bfloat16").removeprefix("torch.")
    requests = [backend.request(p, "cot") for p in problems]
    label = label or shape
    rows = []
    for n_threads in threads:
        set_threads(n_threads)
        for batch in batches:
            backend.generate(requests[: min(batch, 2)], k)  # warm-up: kernels, caches, allocator
            tokens, paths = 0, 0
            started = time.perf_counter()
            for i in range(0, len(requests), batch):
                out = backend.generate(requests[i : i + batch], k)
                tokens += sum(c.tokens for row in out for c in row)
                paths += sum(len(row) for row in out)
            rows.append(BenchRow(name, label, decoder, dtype, torch.get_num_threads(), len(problems), k, batch,
                                 max_tokens, paths, shots, tokens, time.perf_counter() - started))
    backend.close()
    _free_gpu()
    return rows


def _free_gpu() -> None:
    """Give the transformers model's GPU memory back before vLLM sizes its cache from what is free."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bench_eval(shape: str, backends: list[str], problems: int, k: int, max_tokens: int, batches: list[int],
               data_dir: Path | None, threads: list[int] | None = None, model: Path | None = None,
               variants: list[tuple[str, str]] | None = None, shots: int = 0) -> list[BenchRow]:
    """Backends in the order given; run transformers before vllm on one GPU (vLLM does not give its memory back).
    `threads`: torch CPU thread counts to time one after the other (default: the `threads` default of a recipe);
    `model`: a local model folder instead of a random-weight shape (e.g. the demo's SmolLM2-135M-Instruct);
    `variants`: (decoder, precision) pairs of the transformers backend, each timed with its own model load;
    `shots`: few-shot exemplars per prompt (0: the student format)."""
    from mixdistill.cpu import default_threads

    if model is None and shape not in SHAPES:
        raise EvalError(f"--shape: unknown shape {shape!r}; use one of {', '.join(SHAPES)}")
    if model is not None and not (Path(model) / "config.json").is_file():
        raise EvalError(f"--model: {model} is not a model folder (no config.json)")
    ps = bench_problems(data_dir, problems)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mixdistill-bench-eval-") as tmp:
        folder = model or build_model(shape, Path(tmp), [p.question for p in ps] + ["[CoT] [PoT] ans = 1 + 2"])
        for name in backends:
            # a local model loads like the tiny shape: from its folder
            for variant in (variants or [("fast", "auto")]) if name == "transformers" else [("fast", "auto")]:
                rows += run_backend(name, "tiny" if model else shape, folder, ps, k, max_tokens, batches,
                                    threads or [default_threads()], label=Path(model).name if model else None,
                                    variant=variant, shots=shots)
    return rows


def format_rows(rows: list[BenchRow]) -> str:
    base = rows[0].tokens_per_s if rows else 0.0
    lines = [f"{'backend':<13} {'model':<22} {'decoder':<8} {'dtype':<8} {'threads':>7} {'batch':>5} {'shots':>5} "
             f"{'paths':>6} {'tokens':>8} {'seconds':>8} {'tok/s':>9} {'ratio':>6}"]
    for r in rows:
        ratio = r.tokens_per_s / base if base else 0.0
        lines.append(f"{r.backend:<13} {r.shape:<22} {r.decoder:<8} {r.dtype:<8} {r.threads:>7} {r.batch:>5} "
                     f"{r.shots:>5} {r.paths:>6} {r.tokens:>8} {r.seconds:>8.2f} {r.tokens_per_s:>9.1f} {ratio:>5.2f}x")
    return "\n".join(lines)


def rows_json(rows: list[BenchRow]) -> str:
    return json.dumps([{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in rows], indent=1)

