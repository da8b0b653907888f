"""`mixdistill bench train --device cpu`: peak memory (RSS) and time of the real training path on a CPU.

Unlike the GPU throughput bench (`train.bench`, a bare loop on random tokens), this runs `mixdistill train` itself:
the Trainer, the collator, the per-mode loss and the final evaluation, because that is where memory goes that a bare
loop does not show (the Trainer keeping logits, copies of them in the loss). The student is a local model folder
(`--model`, e.g. the demo's SmolLM2-135M-Instruct) or, by default, a random-weight Llama of SmolLM2-135M's shape
(576 hidden, 30 layers, 9 heads, 3 KV heads, 49152 vocabulary); the corpus is made-up rows of exactly the bench's
length in tokens, half CoT, half PoT. Training runs in a fresh process, so its peak RSS is the training's own.
"""

from __future__ import annotations

import io
import multiprocessing
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True)
WORDS = ("Tom has {a} apples and buys {b} more , so he has {a} + {b} = {c} apples . ans = {a} + {b} print ( ans ) "
         "The answer is {c} .")


@dataclass
class CpuBenchResult:
    model: str
    batch_size: int
    seq_len: int
    steps: int
    eval_rows: int
    threads: int
    gradient_checkpointing: bool
    baseline_rss_mib: float  # the training process's RSS before `train()`: interpreter, torch, transformers imported
    peak_rss_mib: float  # its peak over the whole training and evaluation
    phase_peak_rss_mib: dict  # sampled peak per phase: setup (model, corpus, tokenising), train (steps), evaluate, save
    seconds: float
    train_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.seconds if self.seconds else 0.0


def _random_student(folder: Path, texts: list[str]) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mixdistill.train.tiny import build_tokenizer

    tok = build_tokenizer(texts)
    config = LlamaConfig(**SMOLLM2_135M, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _corpus(folder: Path, tokenizer, seq_len: int, train_rows: int, eval_rows: int) -> Path:
    """Rows whose prompt + rationale + EOS (+ BOS) are `seq_len` tokens, as a `<config>/<split>` Parquet export."""
    import polars as pl

    from mixdistill.student import format_prompt, prompt_ids

    def row(i: int) -> dict:
        mode = ("cot", "pot")[i % 2]
        text = f"[{'CoT' if mode == 'cot' else 'PoT'}] Tom has {i} apples and buys {i + 2} more. How many apples?"
        head = len(prompt_ids(tokenizer, format_prompt("{input}\n", text)))
        filler = " ".join(WORDS.format(a=i + j, b=j, c=i + 2 * j) for j in range(seq_len))
        ids = tokenizer(filler, add_special_tokens=False)["input_ids"][: seq_len - head - 1]
        rationale = tokenizer.decode(ids)
        return {"id": f"r{i}", "mode": mode, "input": text, "rationale": rationale}

    for split, n in (("train", train_rows), ("validation", eval_rows)):
        (folder / "mixed").mkdir(parents=True, exist_ok=True)
        pl.DataFrame([row(i) for i in range(n)]).write_parquet(folder / "mixed" / f"{split}-00000-of-00001.parquet")
    return folder


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _child(recipe, queue) -> None:
    """In a fresh process: train, sampling RSS every 20 ms and at every phase switch (setup, training steps,
    evaluation, saving); the overall peak is ru_maxrss (KiB on Linux) or the highest sample, whichever is larger."""
    import threading

    from rich.console import Console

    import mixdistill.train.run as run

    phase, peaks, stop = ["setup"], {}, threading.Event()

    def sample_now() -> None:
        peaks[phase[0]] = max(peaks.get(phase[0], 0.0), _rss_mib())

    def enter(name: str) -> str:
        """Switch phase, sampling at both edges: a phase shorter than the sampling interval is still measured."""
        before = phase[0]
        sample_now()
        phase[0] = name
        sample_now()
        return before

    class Phased(run.MixTrainer):
        def train(self, *args, **kwargs):
            enter("train")
            try:
                return super().train(*args, **kwargs)
            finally:
                enter("save")  # the final evaluation, then writing the adapter and the lineage

        def evaluate(self, *args, **kwargs):
            before = enter("evaluate")
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                enter(before)

    def sample() -> None:
        while not stop.wait(0.02):
            sample_now()

    run.MixTrainer = Phased  # this process only exists for this run
    baseline = _rss_mib()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = run.train(recipe, None, resume=False, console=Console(file=io.StringIO()))
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    # the kernel's high-water mark can trail a VmRSS sample taken just before memory was handed back (madvise), so
    # the peak is the larger of the two
    high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"baseline": baseline, "peak": max(high_water, *peaks.values()),
               "seconds": seconds, "steps": result.metrics["global_step"],
               "phases": {k: round(v, 1) for k, v in peaks.items()}})


def bench_train_cpu(model: Path | None = None, batch_size: int = 8, seq_len: int = 256, steps: int = 2,
                    eval_rows: int = 32, threads: int | None = None, gradient_checkpointing: bool = True) -> CpuBenchResult:
    from transformers import AutoTokenizer

    from mixdistill.cpu import default_threads
    from mixdistill.recipe import CorpusRef, LoraSettings, TrainRecipe

    with tempfile.TemporaryDirectory(prefix="mixdistill-bench-train-cpu-") as tmp:
        tmp = Path(tmp)
        if model is None:
            student = _random_student(tmp / "student", [WORDS.format(a=i, b=i + 1, c=2 * i + 1) for i in range(200)])
        else:
            student = Path(model)
        tokenizer = AutoTokenizer.from_pretrained(student)
        corpus = _corpus(tmp / "corpus", tokenizer, seq_len, batch_size * steps, eval_rows)
        recipe = TrainRecipe(
            name="bench-train-cpu", student=str(student), corpus=CorpusRef(parquet=corpus), output_dir=tmp / "run",
            lora=LoraSettings(r=8, alpha=16, dropout=0.0, target_modules="all-linear"), max_length=seq_len,
            batch_size=batch_size, gradient_accumulation=1, max_steps=steps, save_steps=steps, logging_steps=1,
            precision="fp32", gradient_checkpointing=gradient_checkpointing, warmup_ratio=0.0,
            threads=threads or default_threads(),
        )
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(recipe, queue))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"the training process failed (exit code {child.exitcode})")
        out = queue.get(timeout=10)
    return CpuBenchResult(
        model=student.name if model else "random SmolLM2-135M shape", batch_size=batch_size, seq_len=seq_len,
        steps=out["steps"], eval_rows=eval_rows, threads=recipe.threads, gradient_checkpointing=gradient_checkpointing,
        baseline_rss_mib=round(out["baseline"], 1), peak_rss_mib=round(out["peak"], 1), phase_peak_rss_mib=out["phases"],
        seconds=round(out["seconds"], 1), train_tokens=batch_size * seq_len * out["steps"],
    )


def format_cpu_result(r: CpuBenchResult) -> str:
    return (f"{r.model}: batch {r.batch_size} x {r.seq_len} tokens, {r.steps} steps + evaluation of {r.eval_rows} rows, "
            f"fp32, {r.threads} threads, gradient checkpointing {'on' if r.gradient_checkpointing else 'off'}\n"
            f"peak RSS {r.peak_rss_mib:.0f} MiB (process before training: {r.baseline_rss_mib:.0f} MiB; per phase: "
            + ", ".join(f"{k} {v:.0f}" for k, v in r.phase_peak_rss_mib.items()) + "); "
            f"{r.seconds:.1f} s in train(), {r.tokens_per_s:.1f} training tokens/s")


def result_json(r: CpuBenchResult) -> dict:
    return {**asdict(r), "tokens_per_s": round(r.tokens_per_s, 1)}
