"""The multi-task loss, kept free of everything but torch so the GPU benchmark runs the same code as training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label id that the loss skips (prompt tokens and padding)


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token cross-entropy (float32) and the mask of tokens that count; shapes (batch, seq - 1)."""
    targets = labels[:, 1:]
    flat = logits[:, :-1, :].float()
    loss = F.cross_entropy(flat.reshape(-1, flat.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="none")
    return loss.view(targets.shape), targets.ne(IGNORE)


def weighted_loss(
    token_loss: torch.Tensor, valid: torch.Tensor, mode: torch.Tensor, mode_weights: torch.Tensor, denom=None
) -> torch.Tensor:
    """sum_m w_m * (sum of mode-m rationale token losses) / denom; denom defaults to the number of counted tokens.

    With gradient accumulation, `denom` is the token count of the whole accumulated batch, so every token weighs the
    same whatever micro-batch it lands in.
    """
    weights = mode_weights.to(token_loss.device)[mode.unsqueeze(1).expand_as(token_loss)] * valid
    if denom is None:
        denom = valid.sum().clamp(min=1)
    return (token_loss * weights).sum() / denom
