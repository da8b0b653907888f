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
  quarter of the rows has ended;
- every row keeps, and every step reads, its own copy of the shared prefix's keys and values: with a 4-shot prompt
  and 16 problems x 10 paths that is 2.6 GB read per token on SmolLM2-135M. On a CPU the prefix is kept once and
  attention runs in two parts (cascade attention): all rows' queries against the one shared prefix, each row
  against its own tail, merged exactly through the two parts' log-sum-exp.

The model runs its ordinary forward (any transformers causal LM with a `DynamicCache`), so a merged LoRA adapter
and bf16 weights apply unchanged; the cascade replaces the attention function (through transformers'
`AttentionInterface`) for the duration of one call only.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

COMPACT_SHARE = 0.25  # drop finished rows from the cache once this share of the active rows has ended
SPARE = 64  # token slots a cache layer grows by at a time
CASCADE = "mixdistill_cascade"  # the attention implementation's registered name
_ACTIVE = contextvars.ContextVar("mixdistill_cascade_cache")  # the cache whose layers hold the shared prefixes


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
            self.prefix = None  # (keys, values) of the prefix every row shares, batch 1, after `share_prefix`

        def share_prefix(self, rows: int) -> None:
            """Keep what is cached (batch 1) as the shared prefix, and start `rows` empty rows after it."""
            self.prefix = (self.keys, self.values)
            self.buffers = tuple(x.new_empty((rows, *x.shape[1:-2], SPARE, x.shape[-1])) for x in self.prefix)
            self.length = 0
            self._views()

        def prefix_length(self) -> int:
            return 0 if self.prefix is None else self.prefix[0].shape[-2]

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
            return self.prefix_length() + self.length if self.is_initialized else 0

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.length > 0:
                self.buffers = tuple(b.repeat_interleave(repeats, dim=0) for b in self.buffers)
                self._views()

        def batch_select_indices(self, indices) -> None:
            if self.length > 0:
                self.buffers = tuple(b[indices, ...] for b in self.buffers)
                self._views()

    return GrowingLayer


def _flash(query, key, value, mask, scale):
    """Attention and its log-sum-exp per query (torch's CPU flash kernel); `mask` is additive, in the query's dtype."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, attn_mask=mask, scale=scale)


def cascade_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention over [shared prefix | own tail] in two parts (`key`/`value` hold the rows' own tails only; the
    prefix is the cache layer's, batch 1), merged by log-sum-exp. Grouped-query heads are folded into the query
    length, so neither part repeats keys or values.

    query: rows x heads x q x d; key, value: rows x kv_heads x tail x d; attention_mask: None or a boolean
    rows x 1 x q x (prefix + tail) mask (True: attend). Returns rows x q x heads x d, as transformers expects."""
    layer = _ACTIVE.get().layers[module.layer_idx]
    if layer.prefix is None:  # the shared prefix's own pass
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise ValueError("the decoding loop's cascade attention has no sliding window or softcap: use decoder: generate")
    p_keys, p_values = layer.prefix
    rows, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    folded = query.reshape(rows, kv_heads, heads // kv_heads * q_len, dim)  # (kv head, (group, position))
    tail = key.shape[-2]
    if attention_mask is None:  # no padding: causal within the tail (the queries are its last q_len positions)
        allowed = torch.ones(q_len, tail, dtype=torch.bool, device=query.device).tril(tail - q_len)[None, None]
    else:
        allowed = attention_mask[..., p_keys.shape[-2]:]
    allowed = allowed.expand(rows, 1, q_len, tail).repeat(1, 1, heads // kv_heads, 1)
    additive = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device).masked_fill_(~allowed, float("-inf"))
    out_t, lse_t = _flash(folded, key, value, additive, scaling)
    lse_t = lse_t.masked_fill(~allowed.any(-1), float("-inf"))  # the kernel gives 0 for a row that sees nothing
    # the prefix: every row's queries at once, against the one copy (batch 1, rows folded into the query length)
    shared = folded.transpose(0, 1).reshape(1, kv_heads, -1, dim)
    out_p, lse_p = _flash(shared, p_keys, p_values, None, scaling)
    out_p = out_p.reshape(kv_heads, rows, -1, dim).transpose(0, 1)
    lse_p = lse_p.reshape(kv_heads, rows, -1).transpose(0, 1)
    total = torch.logaddexp(lse_p, lse_t)
    out = (out_p * (lse_p - total).exp()[..., None] + out_t.nan_to_num(0.0) * (lse_t - total).exp()[..., None])
    return out.to(query.dtype).reshape(rows, heads, q_len, dim).transpose(1, 2).contiguous(), None


def _can_cascade(model, cache) -> bool:
    """The cascade needs the CPU kernel, in-place cache layers, attention modules that name their layer, and plain
    causal attention (no sliding window, no logit softcap)."""
    layers = getattr(cache, "layers", None)
    if model.device.type != "cpu" or not layers or type(layers[0]) is not growing_layer():
        return False
    attention = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups")]
    config = model.config
    windowed = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    if windowed or getattr(config, "attn_logit_softcapping", None) is not None:
        return False
    return len(attention) == len(layers) and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")


@contextlib.contextmanager
def _cascade(model, cache) -> Iterator[None]:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CASCADE, cascade_attention)
    AttentionMaskInterface.register(CASCADE, sdpa_mask)  # boolean masks, None where none is needed
    before = model.config._attn_implementation
    token = _ACTIVE.set(cache)
    model.config._attn_implementation = CASCADE
    try:
        yield
    finally:
        model.config._attn_implementation = before
        _ACTIVE.reset(token)


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
    cascade = shared > 0 and _can_cascade(model, cache)
    with torch.inference_mode(), (_cascade(model, cache) if cascade else contextlib.nullcontext()):
        if shared:
            forward(input_ids=torch.tensor([list(prompts[0][:shared])], device=device))
            # then kept once (cascade) or copied per prompt
            if cascade:
                for layer in cache.layers:
                    layer.share_prefix(n_prompts)
            else:
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
