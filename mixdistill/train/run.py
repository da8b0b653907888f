"""`mixdistill train`: recipe -> corpus -> tokenised examples -> LoRA training -> adapter + registry records.

Lineage on re-runs: the model id is drawn once, when a training starts from scratch, and kept in `output_dir`
(`lineage.json`); a resumed run (the same command after a kill, or with more steps) registers under that same id,
so the evaluations stored for the adapter stay attached to it. Re-running a training that already finished with the
same settings changes nothing: no new run, no new model, `training_info.json` untouched.

Runs unchanged under `accelerate launch` (one process per GPU): the main process reads the corpus and writes the
registry first, the others follow, and only the main process writes records afterwards (DuckDB has one writer).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from rich.console import Console
from transformers import set_seed
from transformers.trainer_callback import PrinterCallback

from mixdistill.cpu import set_threads
from mixdistill.ids import content_hash
from mixdistill.recipe import TrainRecipe
from mixdistill.registry.runs import describe_error
from mixdistill.student import INFO_FILE, read_training_info  # lineage next to the adapter, read by eval and push-adapter
from mixdistill.train import records
from mixdistill.train.data import Collator, TrainError, load_corpus, select_rows, tokenize
from mixdistill.train.model import load_student, load_tokenizer, resolve_precision
from mixdistill.train.trainer import MixTrainer, RichProgress, last_checkpoint, training_arguments

ADAPTER_DIR = "adapter"
LINEAGE_FILE = "lineage.json"  # in output_dir: the model id every run of this training registers under
NOT_TRAINING_SETTINGS = ("threads",)  # recipe fields that do not change the adapter (a finished run ignores them)


@dataclass
class TrainResult:
    run_id: str | None
    model_id: str | None
    adapter_path: Path
    metrics: dict[str, Any]
    resumed_from: str | None


def train(recipe: TrainRecipe, registry_path: Path | None, *, resume: bool = True, console: Console | None = None) -> TrainResult:
    """Train the recipe's adapter; with `resume`, continue from the last checkpoint in output_dir if there is one."""
    import torch

    console = console or Console()
    state = PartialState()
    say = console.print if state.is_main_process else (lambda *a, **k: None)
    adapter = Path(recipe.output_dir) / ADAPTER_DIR
    done = finished_training(recipe, adapter) if resume else None
    if done is not None:
        model_id = done.get("model_id")
        say(f"already trained: {adapter} holds this recipe's adapter after {done['metrics'].get('global_step')} steps; "
            "nothing to do (--fresh trains it again)", highlight=False)
        if registry_path and Path(registry_path).exists():
            row = records.find_model(registry_path, str(adapter))
            model_id = row["model_id"] if row else model_id
        return TrainResult(run_id=done.get("run_id"), model_id=model_id, adapter_path=adapter, metrics=done["metrics"],
                           resumed_from=None)
    threads = set_threads(recipe.threads)
    precision = resolve_precision(recipe.precision)
    tokenizer = load_tokenizer(recipe)
    with state.main_process_first():
        corpus = load_corpus(recipe.corpus, recipe, registry_path)
    state.wait_for_everyone()  # every reader has closed the registry before the main process opens it for writing
    train_ds, train_report = tokenize(select_rows(corpus.train, recipe), tokenizer, recipe, recipe.train_split)
    say(train_report.message(recipe.train_split), highlight=False)
    eval_ds, eval_report = (None, None)
    if corpus.eval is not None and corpus.eval.num_rows:
        eval_ds, eval_report = tokenize(corpus.eval, tokenizer, recipe, recipe.eval_split)
        say(eval_report.message(recipe.eval_split), highlight=False)
    say(f"corpus {corpus.label}: {_mode_counts(train_ds)}; precision {precision.name}, {threads} CPU threads",
        highlight=False)

    resumed_from = last_checkpoint(recipe.output_dir) if resume else None
    if resumed_from:
        say(f"resuming from {resumed_from}", highlight=False)
    run_id = records.start_run(registry_path, recipe) if state.is_main_process and registry_path else None
    model_id = lineage_model_id(recipe.output_dir, adapter, resumed=resumed_from is not None) if state.is_main_process else None
    started = time.monotonic()
    try:
        set_seed(recipe.seed)  # the LoRA init draws from the RNG: same seed, same adapter, same run
        model = load_student(recipe, tokenizer, precision)
        trainer = MixTrainer(
            model=model,
            args=training_arguments(recipe, precision, has_eval=eval_ds is not None),
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            data_collator=Collator(tokenizer.pad_token_id),
            processing_class=tokenizer,
            mode_weights=recipe.mode_weights,
            callbacks=[RichProgress(console)],
        )
        trainer.remove_callback(PrinterCallback)  # RichProgress prints the losses instead of raw dicts
        try:
            trainer.train(resume_from_checkpoint=resumed_from)
            eval_metrics = trainer.evaluate() if eval_ds is not None else {}
        except torch.cuda.OutOfMemoryError:
            raise TrainError(
                f"out of GPU memory at batch_size {recipe.batch_size}, max_length {recipe.max_length}: lower batch_size "
                "(raise gradient_accumulation to keep the effective batch), lower max_length, or set "
                "gradient_checkpointing: true / lora.qlora: true"
            ) from None
        trainer.save_model(str(adapter))  # the PEFT adapter only (adapter_config.json + weights) and the tokenizer
    except BaseException as e:
        if run_id:
            records.finish_run(registry_path, run_id, error=describe_error(e))  # Ctrl-C / SIGTERM: interrupted
        raise

    metrics = _metrics(trainer, eval_metrics, train_report, eval_report, time.monotonic() - started)
    base_revision = recipe.revision or getattr(model.base_model.model.config, "_commit_hash", None)
    if state.is_main_process:
        info = {
            "recipe": recipe.model_dump(mode="json"),
            "base_model": recipe.student,
            "base_revision": base_revision,
            "corpus": {"label": corpus.label, "corpus_id": corpus.corpus_id, "hub": corpus.hub,
                       "revision": corpus.revision, "config": recipe.corpus.config},
            "metrics": metrics,
            "run_id": run_id,
            "model_id": model_id,
        }
        (adapter / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")
        if registry_path:
            records.register_model(
                registry_path, model_id=model_id, run_id=run_id, recipe=recipe, base_revision=base_revision, adapter_path=adapter,
                corpus_id=corpus.corpus_id, metrics=metrics,
            )
            records.finish_run(registry_path, run_id)
    return TrainResult(run_id=run_id, model_id=model_id, adapter_path=adapter, metrics=metrics, resumed_from=resumed_from)


def training_settings(recipe_json: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recipe_json.items() if k not in NOT_TRAINING_SETTINGS}


def finished_training(recipe: TrainRecipe, adapter: Path) -> dict[str, Any] | None:
    """The adapter's lineage when it is this recipe's finished training: the same settings, and no checkpoint newer
    than the saved adapter (a killed continuation with other settings leaves one)."""
    info = read_training_info(adapter)
    if info is None or training_settings(info.get("recipe") or {}) != training_settings(recipe.model_dump(mode="json")):
        return None
    last = last_checkpoint(recipe.output_dir)
    step = int(Path(last).name.rsplit("-", 1)[1]) if last else 0
    return info if (info.get("metrics") or {}).get("global_step", -1) >= step else None


def lineage_model_id(output_dir: Path, adapter: Path, *, resumed: bool) -> str:
    """The model id of this training: kept from the run that started it when resuming, else drawn anew."""
    path = Path(output_dir) / LINEAGE_FILE
    if resumed and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["model_id"]
    model_id = content_hash({"adapter_path": str(adapter.resolve()), "started": uuid.uuid4().hex})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_id": model_id}), encoding="utf-8")
    return model_id


def _mode_counts(ds) -> str:
    from collections import Counter

    from mixdistill.train.data import MODES

    counts = Counter(ds["mode_id"])
    return ", ".join(f"{counts.get(i, 0)} {m}" for i, m in enumerate(MODES))


def _metrics(trainer, eval_metrics, train_report, eval_report, seconds: float) -> dict[str, Any]:
    """What the registry and the model card keep: final losses (overall and per mode), steps, rows left out."""
    history = trainer.state.log_history
    run = trainer.window("run")  # the objective over every token this invocation trained on
    last_train = next((h for h in reversed(history) if "loss" in h), {})
    out: dict[str, Any] = {
        "global_step": trainer.state.global_step,
        "train_loss": round(run["loss"], 4) if run else None,
        "train_runtime_s": round(seconds, 1),
        "train_examples": train_report.kept,
        "train_dropped_overlength": train_report.dropped,
    }
    out.update({k: v for k, v in last_train.items() if k == "loss" or k.startswith("loss_")})
    out.update({k: v for k, v in eval_metrics.items() if k.startswith("eval_loss")})
    if eval_report is not None:
        out["eval_examples"] = eval_report.kept
        out["eval_dropped_overlength"] = eval_report.dropped
    return out
