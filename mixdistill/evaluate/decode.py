"""k sampled (or one greedy) continuation per prompt for a batch of prompts, on a local causal LM: the evaluation's
decoding loop, written for speed on a CPU.

Hand-written because transformers' `generate` spends most of a small model's CPU time on work an evaluation does
not need (measured on SmolLM2-135M, README "Evaluation speed"):

- `num_return_sequences=k` copies each prompt k times *before* the prefill, and every prompt of a few-shot batch
  repeats the same exemplars: here the batch's common prefix is encoded once, each prompt's own tail once, and the
  KV cache is then repeated k times;
- its top-p step sorts the whole vocabulary and draws over all of it, for every sequence at every step (about a
  third of the step time with a 49k vocabulary). Sampling here looks at the `top_k` most likely tokens only, which
  is the set transformers keeps too (its default `top_k` is 50), so the distribution is the same: temperature, then
  top-k, then top-p over the renormalised top-k, then a draw;
- a finished sequence stays in the batch until the longest one ends; here finished rows leave the KV cache once a
  quarter of the rows has ended.

The model runs its ordinary forward (any transformers causal LM with a `DynamicCache`), so a merged LoRA adapter,
bf16 weights and sdpa attention all apply unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

COMPACT_SHARE = 0.25  # drop finished rows from the cache once this share of the active rows has ended
SPARE = 64  # token slots a cache layer grows by at a time


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int
    temperature: float | None = None  # None: greedy
    top_p: float = 1.0
    top_k: int = 50

    @property
    def greedy(self) -> bool:
        return self.temperature is None


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the prefix every prompt shares, leaving each prompt at least one token of its own (its last token
    must go through the suffix pass to give the first next-token logits)."""
    shortest = min(len(p) for p in prompts)
    n = 0
    first = prompts[0]
    while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def next_tokens(logits: torch.Tensor, decoding: Decoding, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `logits` (rows x vocab): argmax, or a draw from the temperature / top-k / top-p
    distribution (the smallest set of the top-k tokens whose probability reaches top_p, renormalised)."""
    if decoding.greedy:
        return logits.argmax(-1)
    top, index = logits.topk(min(decoding.top_k, logits.shape[-1]), dim=-1)  # dividing by T first would not change them
    probs = torch.softmax(top.float() / decoding.temperature, dim=-1)
    if decoding.top_p < 1.0:
        before = probs.cumsum(-1) - probs  # probability of the tokens ranked above each one
        probs = probs.masked_fill(before >= decoding.top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    return index.gather(-1, choice).squeeze(-1)


def new_cache(config):
    """A `DynamicCache` whose plain layers append in place (`GrowingLayer`); models with other layer kinds
    (sliding windows, linear attention) keep transformers' own."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    layers = getattr(cache, "layers", None)
    if layers and all(type(layer) is DynamicLayer for layer in layers):
        layer = growing_layer()
        cache.layers = [layer() for _ in layers]
    return cache


@functools.cache
def growing_layer():
    """The `GrowingLayer` class, made on first use: transformers is imported only when decoding."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A cache layer with spare token slots: a new token is written in place, where `DynamicLayer` concatenates
        (copies) the whole layer's cache at every step (a fifth of the step time on CPU)."""

        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            self.length = 0
            self.buffers = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = key_states.shape[-2]
            if self.buffers is None or self.length + n > self.buffers[0].shape[-2]:
                self._resize(self.length + n + SPARE, key_states, value_states)
            for buffer, new in zip(self.buffers, (key_states, value_states)):
                buffer[..., self.length : self.length + n, :] = new
            self.length += n
            self._views()
            return self.keys, self.values

        def _resize(self, capacity: int, key_states, value_states) -> None:
            old = self.buffers
            self.buffers = tuple(x.new_empty((*x.shape[:-2], capacity, x.shape[-1])) for x in (key_states, value_states))
            if old is not None:
                for buffer, kept in zip(self.buffers, old):
                    buffer[..., : self.length, :] = kept[..., : self.length, :]

        def _views(self) -> None:
            self.keys, self.values = (b[..., : self.length, :] for b in self.buffers)

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self.buffers = tuple(b.repeat_interleave(repeats, dim=0) for b in self.buffers)
                self._views()

        def batch_select_indices(self, indices) -> None:
            if self.get_seq_length() > 0:
                self.buffers = tuple(b[indices, ...] for b in self.buffers)
                self._views()

    return GrowingLayer


def generate_paths(
    model,
    prompts: Sequence[Sequence[int]],
    k: int,
    decoding: Decoding,
    eos: set[int],
    *,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
    stop_text: Callable[[list[int]], bool] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[list[list[int]]]:
    """For each prompt, k lists of generated token ids (an end-of-sequence token included when the path ended by
    itself). `stop_text(ids)` may end a path early (a stop string); `should_stop()` ends the whole batch (its
    output is then incomplete, and the caller discards it)."""
    if decoding.greedy and k != 1:
        raise ValueError("greedy decoding gives one path per prompt (k = 1)")
    device = model.device
    cache = new_cache(model.config)
    # transformers 5.2x renamed the forward's `past_key_values` to `cache`
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(**kwargs):
        return model(**kwargs, **{cache_kw: cache}, use_cache=True, logits_to_keep=1).logits[:, -1]
    shared = common_prefix(prompts)
    n_prompts = len(prompts)
    with torch.inference_mode():
        if shared:
            forward(input_ids=torch.tensor([list(prompts[0][:shared])], device=device))
            cache.batch_repeat_interleave(n_prompts)
        tails = [list(p[shared:]) for p in prompts]
        width = max(map(len, tails))
        ids = torch.tensor([[pad_id] * (width - len(t)) + t for t in tails], device=device)
        # padding sits between the shared prefix and each tail: masked out, with positions that continue the prefix
        mask = torch.tensor([[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in tails], device=device)
        positions = torch.tensor([[shared] * (width - len(t)) + list(range(shared, shared + len(t))) for t in tails],
                                 device=device)
        logits = forward(input_ids=ids, attention_mask=mask, position_ids=positions)
        if k > 1:
            cache.batch_repeat_interleave(k)
            logits, mask = logits.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
        position = torch.tensor([shared + len(t) for t in tails], device=device).repeat_interleave(k)
        rows = list(range(n_prompts * k))  # the output path of each cache row
        done = [False] * len(rows)  # an ended row stays in the cache (its tokens unrecorded) until the next compaction
        ended = 0
        out: list[list[int]] = [[] for _ in rows]
        eos_ids = torch.tensor(sorted(eos) or [-1], device=device)
        for step in range(decoding.max_new_tokens):
            if should_stop():
                break
            token = next_tokens(logits, decoding, generator)
            is_eos = torch.isin(token, eos_ids).tolist()
            for i, (row, t) in enumerate(zip(rows, token.tolist())):
                if done[i]:
                    continue
                out[row].append(t)
                if is_eos[i] or (stop_text is not None and step % 4 == 3 and stop_text(out[row])):
                    done[i] = True
                    ended += 1
            if ended == len(rows) or step + 1 == decoding.max_new_tokens:
                break
            if ended >= COMPACT_SHARE * len(rows):
                alive = [i for i, d in enumerate(done) if not d]
                keep = torch.tensor(alive, device=device)
                cache.batch_select_indices(keep)
                token, mask, position = token[keep], mask[keep], position[keep]
                rows, done, ended = [rows[i] for i in alive], [False] * len(alive), 0
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            logits = forward(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None])
            position = position + 1
    return [out[i * k : (i + 1) * k] for i in range(n_prompts)]
