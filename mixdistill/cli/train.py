"""Student training commands: train, push-adapter, bench train."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from mixdistill.cli.common import app, bench_app, console, state
from mixdistill.errors import MixdistillError


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="training recipe (YAML, kind: train)"),
    fresh: bool = typer.Option(False, "--fresh", help="ignore checkpoints in output_dir and start over"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="override the recipe's max_steps"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (overrides the recipe's threads)"),
) -> None:
    """LoRA-train a student on a mixed CoT/PoT corpus; re-running the same command resumes from the last checkpoint.

    Several GPUs: `accelerate launch -m mixdistill train RECIPE`.
    """
    from mixdistill.cpu import check_threads
    from mixdistill.recipe import TrainRecipe, load_for_run

    spec = load_for_run(recipe, TrainRecipe)  # every setting is checked before torch is even imported
    if threads is not None:
        spec = spec.model_copy(update={"threads": check_threads(threads, "--threads")})
    if max_steps is not None:
        spec = spec.model_copy(update={"max_steps": max_steps})
    from mixdistill.train.run import train as run_train

    result = run_train(spec, state.registry, resume=not fresh, console=console)
    console.print(f"adapter: {result.adapter_path}", highlight=False)
    if result.model_id:
        console.print(f"registered model {result.model_id} (run {result.run_id}) in {state.registry}", highlight=False)
    shown = {k: v for k, v in result.metrics.items() if "loss" in k}
    console.print("metrics: " + json.dumps(shown), highlight=False)


@app.command("push-adapter")
def push_adapter(
    model: str = typer.Argument(..., help="registered model id, or an adapter folder written by `mixdistill train`"),
    repo: str = typer.Option(..., "--repo", help="Hub model repo, owner/name"),
    private: bool = typer.Option(False, "--private", help="create the repo as private"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the files and print the card, upload nothing"),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Hub endpoint (default: $HF_ENDPOINT or the Hub)"),
) -> None:
    """Upload an adapter with its model card (base model, corpus + revision, settings, eval results). Token: $HF_TOKEN."""
    from mixdistill.train.publish import push_adapter as run_push

    result = run_push(model, repo, registry_path=state.registry, private=private, dry_run=dry_run,
                      endpoint=endpoint or os.environ.get("HF_ENDPOINT"))
    if result.commit is None:
        console.print(result.card, markup=False, highlight=False, soft_wrap=True)
    for path in result.files:
        console.print(f"  {path}", highlight=False)
    if result.commit is None:
        console.print(f"dry run: would upload {len(result.files)} files to {repo}")
    else:
        console.print(f"pushed {model} to {repo} @ {result.commit[:12]}: {result.url}", highlight=False)


@bench_app.command("train")
def bench_train(
    tiny: bool = typer.Option(False, "--tiny", help="a tiny Llama (CPU smoke run) instead of Llama-2-7B"),
    run: Optional[list[str]] = typer.Option(
        None, "--run", help="BATCH[:ckpt][:compile][:nocast], repeatable (default 4); compiled runs go last"
    ),
    device: str = typer.Option("auto", "--device", help="auto: throughput and MFU of a bare loop (on the GPU when "
                               "there is one); cpu: peak RSS of `mixdistill train` itself, SmolLM2-135M-sized student"),
    model: Optional[Path] = typer.Option(None, "--model", help="cpu: a local student folder (default: random weights)"),
    batch_size: int = typer.Option(8, "--batch", min=1, help="cpu: batch size"),
    eval_rows: int = typer.Option(32, "--eval-rows", min=1, help="cpu: rows in the final evaluation"),
    checkpointing: bool = typer.Option(True, "--ckpt/--no-ckpt", help="cpu: gradient checkpointing"),
    threads: Optional[int] = typer.Option(None, "--threads", help="cpu: torch CPU threads"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", min=8, help="tokens per row (default: auto 1024, cpu 256)"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="timed steps per run (default: auto 10, cpu 2)"),
    warmup: int = typer.Option(3, "--warmup", min=1),
    lora_r: int = typer.Option(16, "--lora-r", min=1),
    peak_tflops: Optional[float] = typer.Option(None, "--peak-tflops", help="override the device's bf16 peak"),
    output: Optional[Path] = typer.Option(None, "--json", help="write the results here"),
) -> None:
    """Training throughput of a LoRA student on random weights: tokens/s and MFU (4N + attention FLOPs per token).

    Also runs without the rest of mixdistill installed: `python -m mixdistill.train.bench`. `--device cpu` measures
    memory instead: the peak RSS of a real `mixdistill train` run (training steps and the final evaluation).
    """
    from mixdistill.train.bench import RunSpec, bench_train as run_bench, format_table

    if device not in ("auto", "cpu"):
        raise MixdistillError(f"--device: unknown device {device!r}; use auto or cpu")
    if device == "cpu":
        from mixdistill.cpu import check_threads
        from mixdistill.train.cpu_bench import bench_train_cpu, format_cpu_result, result_json

        if model is not None and not (model / "config.json").is_file():
            raise MixdistillError(f"--model: {model} is not a model folder (no config.json)")
        result = bench_train_cpu(model, batch_size, seq_len or 256, steps or 2, eval_rows,
                                 check_threads(threads, "--threads"), checkpointing)
        if output:
            output.write_text(json.dumps(result_json(result), indent=1), encoding="utf-8")
        console.print(format_cpu_result(result), highlight=False)
        return
    seq_len, steps = seq_len or 1024, steps or 10

    try:
        specs = [RunSpec.parse(r) for r in (run or ["4"])]
    except ValueError as e:
        raise MixdistillError(str(e)) from None
    summary = run_bench("tiny" if tiny else "llama2-7b", specs, seq_len, steps, warmup, lora_r, peak_tflops,
                        report=lambda line: None)
    if output:
        output.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    console.print(format_table(summary), highlight=False)
