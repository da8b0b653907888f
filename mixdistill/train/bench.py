"""Training throughput of a LoRA student: tokens/s and model-FLOPs utilisation (MFU).

A Llama-2-7B-shaped model with random weights is built directly on the device (nothing downloaded), wrapped with LoRA
on every linear layer, and trained on random tokens with the same loss code as `mixdistill train`
(`mixdistill.train.loss`), bf16 autocast with float32 adapter weights as the Trainer runs it.

FLOPs per token (the "model FLOPs" of MFU: recomputation under activation checkpointing is not counted):
  * frozen linear weights N_f (every projection and the LM head; not the embedding lookup): 2 N_f forward plus
    2 N_f for the input gradient in backward; frozen weights get no weight gradient, so 4 N_f, not 6 N_f;
  * trainable LoRA weights N_l: 6 N_l;
  * attention scores and values: 4 * layers * seq * hidden forward and twice that backward, i.e. 12 * L * s * h,
    counted over the full square as in the PaLM/Megatron MFU convention (causal masking is not halved).

Runs standalone on a machine with only torch, transformers and peft: `python -m mixdistill.train.bench --help`.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LLAMA2_7B = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
)
TINY = dict(
    vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=1024,
)
SHAPES = {"llama2-7b": LLAMA2_7B, "tiny": TINY}

# dense bf16 tensor-core peak (datasheet, no sparsity), matched against torch.cuda.get_device_name()
PEAK_BF16 = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989.4e12, "H200": 989.4e12, "A100": 312e12,
             "L40S": 362e12, "A10G": 70e12}


@dataclass
class RunSpec:
    batch_size: int
    checkpointing: bool = False
    compile: bool = False
    nocast: bool = False  # skip peft's cast of each LoRA input to float32 (autocast runs the matmul in bf16 anyway)

    FLAGS = ("ckpt", "compile", "nocast")

    @classmethod
    def parse(cls, text: str) -> "RunSpec":
        """`8`, `16:ckpt`, `4:compile`, `8:ckpt:compile:nocast`."""
        head, *flags = text.split(":")
        if not head.isdigit() or int(head) < 1 or set(flags) - set(cls.FLAGS):
            raise ValueError(f"--run {text!r}: expected BATCH[:ckpt][:compile][:nocast], e.g. 8 or 16:ckpt")
        return cls(int(head), "ckpt" in flags, "compile" in flags, "nocast" in flags)

    @property
    def label(self) -> str:
        flags = [f for f, on in zip(self.FLAGS, (self.checkpointing, self.compile, self.nocast)) if on]
        return ":".join([str(self.batch_size), *flags])


@dataclass
class BenchResult:
    run: str
    status: str  # ok | oom
    batch_size: int
    seq_len: int
    tokens_per_step: int
    step_s: float | None = None
    tokens_per_s: float | None = None
    tflops: float | None = None
    mfu: float | None = None
    peak_mem_gib: float | None = None
    compile_s: float | None = None


def flops_per_token(frozen_linear: int, lora: int, layers: int, hidden: int, seq_len: int) -> float:
    return 4 * frozen_linear + 6 * lora + 12 * layers * hidden * seq_len


def peak_flops(device) -> tuple[float | None, str]:
    import torch

    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():  # ordered: "H100 PCIe" before "H100"
        if key in name:
            return peak, name
    return None, name


def build_model(shape: str, device, lora_r: int):
    """Random-weight Llama of the given shape, built in place on `device`, with LoRA on every linear layer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], tie_word_embeddings=False, use_cache=False)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    frozen_linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)  # adapters in float32 (peft's default), as in training
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, config, frozen_linear, lora_params


def run_one(model, config, spec: RunSpec, seq_len: int, steps: int, warmup: int, device, fpt: float, peak: float | None) -> BenchResult:
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    from mixdistill.train.loss import token_losses, weighted_loss

    tokens = spec.batch_size * seq_len
    result = BenchResult(spec.label, "ok", spec.batch_size, seq_len, tokens)
    cuda = device.type == "cuda"
    base = model.base_model.model
    prefix = "activation" if hasattr(base, "activation_checkpointing_enable") else "gradient"  # renamed in transformers 5.x
    if spec.checkpointing:
        getattr(base, f"{prefix}_checkpointing_enable")(**{f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}})
    else:
        getattr(base, f"{prefix}_checkpointing_disable")()
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = not spec.nocast
    if spec.compile:
        for layer in base.model.layers:  # regional compilation: one graph, reused by every layer
            layer.compile(dynamic=False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=cuda)
    weights = torch.ones(2, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [torch.randint(0, config.vocab_size, (spec.batch_size, seq_len), device=device, generator=gen) for _ in range(4)]
    mode = torch.arange(spec.batch_size, device=device) % 2
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def step(ids):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = model(input_ids=ids).logits
        token_loss, valid = token_losses(logits, ids)
        loss = weighted_loss(token_loss, valid, mode, weights)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    times = []
    try:
        t0 = time.perf_counter()
        for i in range(warmup):
            step(batches[i % len(batches)])
        sync()
        result.compile_s = round(time.perf_counter() - t0, 1) if spec.compile else None
        for i in range(steps):
            t = time.perf_counter()
            step(batches[i % len(batches)])
            sync()
            times.append(time.perf_counter() - t)
    except torch.cuda.OutOfMemoryError:
        result.status = "oom"
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        gc.collect()
        if cuda:
            result.peak_mem_gib = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
            torch.cuda.empty_cache()
    if result.status == "ok":
        result.step_s = round(statistics.median(times), 4)
        result.tokens_per_s = round(tokens / result.step_s, 1)
        result.tflops = round(result.tokens_per_s * fpt / 1e12, 1)
        result.mfu = round(result.tokens_per_s * fpt / peak, 4) if peak else None
    return result


def bench_train(
    shape: str = "llama2-7b",
    runs: list[RunSpec] | None = None,
    seq_len: int = 1024,
    steps: int = 10,
    warmup: int = 3,
    lora_r: int = 16,
    peak_tflops: float | None = None,
    report=print,
) -> dict:
    """Build the model once, then time each run (non-compiled first: compiling changes the model in place)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = sorted(runs or [RunSpec(4)], key=lambda r: r.compile)
    t0 = time.perf_counter()
    model, config, frozen_linear, lora_params = build_model(shape, device, lora_r)
    build_s = time.perf_counter() - t0
    fpt = flops_per_token(frozen_linear, lora_params, config.num_hidden_layers, config.hidden_size, seq_len)
    peak, device_name = peak_flops(device)
    if peak_tflops:
        peak = peak_tflops * 1e12
    header = {
        "shape": shape, "device": device_name, "torch": torch.__version__, "seq_len": seq_len, "lora_r": lora_r,
        "frozen_linear_params": frozen_linear, "lora_params": lora_params, "flops_per_token": fpt,
        "peak_flops": peak, "build_s": round(build_s, 1), "steps": steps, "warmup": warmup,
        "precision": "bf16 autocast, fp32 adapters" if device.type == "cuda" else "fp32",
    }
    report(json.dumps(header))
    results = []
    for spec in runs:
        res = run_one(model, config, spec, seq_len, steps, warmup, device, fpt, peak)
        report(json.dumps(asdict(res)))
        results.append(asdict(res))
    return {**header, "results": results}


def format_table(summary: dict) -> str:
    lines = [f"{summary['shape']} on {summary['device']}, seq {summary['seq_len']}, LoRA r={summary['lora_r']} all-linear, "
             f"{summary['precision']}; {summary['flops_per_token'] / 1e9:.2f} GFLOP/token"]
    lines.append(f"{'run':<16}{'status':<8}{'tokens/s':>12}{'step s':>9}{'TFLOP/s':>9}{'MFU':>8}{'mem GiB':>9}")
    for r in summary["results"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"{r['run']:<16}{r['status']:<8}{r['tokens_per_s'] or '-':>12}{r['step_s'] or '-':>9}"
                     f"{r['tflops'] or '-':>9}{mfu:>8}{r['peak_mem_gib'] or '-':>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixdistill.train.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama (CPU smoke run) instead of Llama-2-7B")
    parser.add_argument("--run", action="append", default=None,
                        help="BATCH[:ckpt][:compile][:nocast], repeatable (default 4); compiled runs go last")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 peak")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    try:
        runs = [RunSpec.parse(r) for r in (args.run or ["4"])]
    except ValueError as e:
        parser.error(str(e))
    summary = bench_train("tiny" if args.tiny else "llama2-7b", runs, args.seq_len, args.steps, args.warmup,
                          args.lora_r, args.peak_tflops)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
