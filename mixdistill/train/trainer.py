"""The multi-task trainer: transformers' `Trainer` with a per-mode weighted loss and per-mode loss logging.

The paper's multi-task loss is L = sum_m w_m * L_m over the modes (CoT, PoT). Here every rationale token's
cross-entropy is weighted by its row's mode weight and the sum is divided by the number of rationale tokens in the
whole (gradient-accumulated) batch, so w = {cot: 1, pot: 1} is plain token-level SFT.

Every logged loss is on that one basis, the rationale token (`loss.window_losses`): `loss` and `eval_loss` are the
objective over all tokens since the last log (or of the whole evaluation), `loss_cot` / `loss_pot` and their `eval_`
twins the mean token loss of each mode, and `train_loss` the objective over every token this invocation trained on.
(The Trainer's own `loss` is a mean of per-step losses and its `eval_loss` a mean over batches; both are replaced.) Checkpoints, exact resume
(optimizer, scheduler, RNG and data position), cosine schedule, mixed precision and multi-GPU (`accelerate launch`)
come from the Trainer itself; trl's SFTTrainer would add nothing that the weighted loss does not have to replace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from mixdistill.recipe import TrainRecipe
from mixdistill.train.data import MODES
from mixdistill.train.loss import hidden_token_losses, token_losses, weighted_loss, window_losses
from mixdistill.train.model import Precision


class MixTrainer(Trainer):
    """Trainer whose batches carry a `mode` index per row (0 = cot, 1 = pot)."""

    def __init__(self, *args: Any, mode_weights: dict[str, float], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mode_weights = torch.tensor([mode_weights.get(m, 0.0) for m in MODES], dtype=torch.float32)
        # our loss is normalised by the token count of the whole accumulated batch, so the Trainer must count tokens
        # (num_items_in_batch) and must not divide by the accumulation steps again
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        # per mode: [sum of token losses, token count]; "train" and "eval" reset at each log, "run" never
        self._mode_stats = {split: torch.zeros(2, len(MODES), dtype=torch.float64) for split in ("train", "eval", "run")}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = inputs.pop("mode")
        labels = inputs.pop("labels")
        lm_head = self._lm_head()
        if lm_head is not None:  # the model returns its final hidden states; the loss runs the LM head in chunks
            outputs = model(**inputs, logits_to_keep=1, output_hidden_states=True)
            token_loss, valid = hidden_token_losses(outputs.hidden_states[-1], lm_head, labels)
        else:
            outputs = model(**inputs)
            token_loss, valid = token_losses(outputs.logits, labels)
        loss = weighted_loss(token_loss, valid, mode, self.mode_weights, num_items_in_batch)
        if num_items_in_batch is not None and getattr(self.args, "average_tokens_across_devices", False):
            # the token count is summed over processes while DDP averages gradients: undo that average, exactly
            # as Trainer.compute_loss does
            tp = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
            loss = loss * (self.accelerator.num_processes // tp if self.args.n_gpu <= 1 else self.args.n_gpu)
        row_mode = mode.unsqueeze(1).expand_as(valid)
        for split in ("train", "run") if model.training else ("eval",):
            self._record(token_loss.detach(), valid, row_mode, split)
        return (loss, outputs) if return_outputs else loss

    def _lm_head(self):
        """The student's output layer when its forward can skip the logits (`logits_to_keep`, transformers' causal
        LMs), else None: then the loss reads the full logits."""
        if not hasattr(self, "_head"):
            import inspect

            base = self.accelerator.unwrap_model(self.model)
            base = base.get_base_model() if hasattr(base, "get_base_model") else base
            head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
            self._head = head if head is not None and "logits_to_keep" in inspect.signature(base.forward).parameters else None
        return self._head

    def _record(self, token_loss: torch.Tensor, valid: torch.Tensor, row_mode: torch.Tensor, split: str) -> None:
        """Accumulate per-mode loss sums and token counts on the device (no host sync per step)."""
        stats = self._mode_stats[split] = self._mode_stats[split].to(token_loss.device)
        index = row_mode.reshape(-1)
        stats[0].scatter_add_(0, index, (token_loss * valid).reshape(-1).double())
        stats[1].scatter_add_(0, index, valid.reshape(-1).double())

    def window(self, split: str) -> dict[str, float]:
        """`window_losses` of one split's accumulated statistics, summed over processes."""
        stats = self.accelerator.reduce(self._mode_stats[split].to(self.args.device), reduction="sum").cpu().clone()
        return window_losses(stats[0], stats[1], self.mode_weights, MODES)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Put `loss`, `loss_cot`, `loss_pot` (`eval_` twins for an evaluation) on the token basis in each log."""
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train" if "loss" in logs else None
        if split is not None:
            losses = self.window(split)
            self._mode_stats[split].zero_()
            prefix = "eval_" if split == "eval" else ""
            logs.update({prefix + k: round(v, 4) for k, v in losses.items()})
        super().log(logs, start_time)


def training_arguments(recipe: TrainRecipe, precision: Precision, has_eval: bool) -> TrainingArguments:
    eval_steps = recipe.eval_steps or recipe.save_steps
    return TrainingArguments(
        output_dir=str(recipe.output_dir),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps or -1,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=recipe.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        bf16=precision.name == "bf16",
        fp16=precision.name == "fp16",
        use_cpu=not torch.cuda.is_available(),
        **_checkpointing(recipe.gradient_checkpointing),
        train_sampling_strategy="group_by_length" if recipe.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,  # `mode` and `length` are ours, not model inputs
        prediction_loss_only=True,  # evaluation needs the losses only; else the Trainer keeps every batch's logits
        logging_steps=recipe.logging_steps,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        seed=recipe.seed,
        data_seed=recipe.seed,
        report_to="none",
        disable_tqdm=True,  # RichProgress shows progress instead
    )


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Activation checkpointing under the argument name this transformers version uses (renamed in 5.x)."""
    name = "activation" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient"
    return {f"{name}_checkpointing": enabled,
            f"{name}_checkpointing_kwargs": {"use_reentrant": False} if enabled else None}


class RichProgress(TrainerCallback):
    """A rich progress bar with the latest loss per mode; printed by the main process only."""

    def __init__(self, console):
        self.console = console
        self.progress = None

    def on_train_begin(self, args, state, control, **kwargs):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if state.is_world_process_zero:
            self.progress = Progress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=self.console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs:
            shown = {k: v for k, v in logs.items() if k.startswith(("loss", "eval_loss")) and isinstance(v, float)}
            line = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
            self.progress.update(self.task, info=line)
            if line:
                self.progress.console.print(f"step {state.global_step}: {line}", highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
