"""The multi-task loss, kept free of everything but torch so the GPU benchmark runs the same code as training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100  # label id that the loss skips (prompt tokens and padding)


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token cross-entropy (float32) and the mask of tokens that count; shapes (batch, seq).

    Position t is scored against label t + 1 (the last position against nothing). The labels are shifted, not the
    logits: a shifted slice of the (batch x seq x vocab) logits is not contiguous, so flattening it copied the largest
    tensor of the step (400 MB for a 49k-vocabulary student at 8 x 256 tokens). Logits already in float32 are not copied.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    scores = logits if logits.dtype == torch.float32 else logits.float()
    loss = F.cross_entropy(scores.reshape(-1, scores.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="none")
    return loss.view(targets.shape), targets.ne(IGNORE)


def hidden_token_losses(hidden: torch.Tensor, lm_head, labels: torch.Tensor, chunk_tokens: int = 1024
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_losses` from the final hidden states, without ever holding the logits of the whole batch.

    Only the positions that are scored (rationale tokens, not prompt or padding) go through the LM head, in chunks of
    `chunk_tokens`, each under activation checkpointing: a chunk's logits exist only while its loss is computed (and
    again while its gradient is), so the largest tensor of the step shrinks from batch x seq x vocab to
    chunk_tokens x vocab (for a 49k-vocabulary student at 8 x 256 tokens: from 400 MB, plus as much again for its
    log-softmax and each gradient, to under 200 MB in all). The values are those of `token_losses`.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    valid = targets.ne(IGNORE)
    scored, wanted = hidden[valid], targets[valid]
    token_loss = torch.zeros(valid.shape, dtype=torch.float32, device=hidden.device)
    if scored.size(0) == 0:
        return token_loss + 0.0 * hidden.sum(), valid  # keeps the graph connected for an all-prompt batch
    parts = [checkpoint(_chunk_loss, lm_head, scored[i : i + chunk_tokens], wanted[i : i + chunk_tokens], use_reentrant=False)
             for i in range(0, scored.size(0), chunk_tokens)]
    return token_loss.index_put((valid.nonzero(as_tuple=True)), torch.cat(parts)), valid


def _chunk_loss(lm_head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # the hidden states come out of accelerate's autocast wrapper of forward() in fp32, and this runs outside it:
    # with bf16/fp16 weights they are cast to the head's dtype, as autocast would have done
    return F.cross_entropy(lm_head(hidden.to(lm_head.weight.dtype)).float(), targets, reduction="none")


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


def window_losses(sums: torch.Tensor, counts: torch.Tensor, mode_weights: torch.Tensor, modes: tuple[str, ...]) -> dict:
    """Losses over a stretch of training (or an evaluation) on one basis, the token: `loss` is the objective,
    sum_m w_m * (mode-m token losses) / (all rationale tokens), exactly what `weighted_loss` gives for the whole stretch
    as one batch; `loss_<mode>` is the plain mean token loss of that mode. With every weight 1, `loss` is the
    token-weighted mean of the modes' losses, so it lies between them. Empty modes are left out; no tokens: {}."""
    total = float(counts.sum())
    if total == 0:
        return {}
    out = {"loss": float((mode_weights.double().cpu() * sums.double().cpu()).sum()) / total}
    for i, m in enumerate(modes):
        if counts[i] > 0:
            out[f"loss_{m}"] = float(sums[i] / counts[i])
    return out
