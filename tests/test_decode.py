"""The evaluation's decoding loop (`mixdistill.evaluate.decode`) against transformers' own `generate`, on a tiny
random Llama: the same greedy tokens, the same sampling distribution, and nothing changed by the shared prefix, the
in-place cache or the dropping of finished rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from mixdistill.evaluate.decode import Decoding, common_prefix, generate_paths, next_tokens
from mixdistill.train.tiny import build_tiny_student

TEXTS = [f"Question: Tom has {a} apples and buys {b} more. How many apples does he have? Answer:"
         for a, b in [(3, 4), (10, 5), (7, 8), (12, 30), (2, 2), (6, 1)]]


@pytest.fixture(scope="module")
def model_and_tok(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    folder = build_tiny_student(TEXTS, Path(tmp_path_factory.mktemp("tiny")) / "m")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.pad_token or tok.unk_token or tok.eos_token
    return AutoModelForCausalLM.from_pretrained(folder).eval(), tok


def hf_greedy(model, prompts, max_new, pad):
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=pad, eos_token_id=None)
    return out[:, width:].tolist()


def test_greedy_matches_transformers_generate_with_a_shared_prefix_and_ragged_prompts(model_and_tok):
    model, tok = model_and_tok
    exemplar = tok.encode(" ".join(TEXTS[:2]))  # a long prefix every prompt shares, as few-shot prompts do
    prompts = [exemplar + tok.encode(t) for t in TEXTS[2:]] + [tok.encode(TEXTS[0])[:5]]
    assert common_prefix(prompts[:-1]) >= len(exemplar)
    ours = generate_paths(model, prompts, 1, Decoding(24), set(), pad_id=tok.pad_token_id)
    theirs = hf_greedy(model, prompts, 24, tok.pad_token_id)
    assert [p[0] for p in ours] == theirs
    alone = [generate_paths(model, [p], 1, Decoding(24), set(), pad_id=tok.pad_token_id)[0][0] for p in prompts]
    assert alone == theirs  # batching and prefix sharing change nothing


def test_finished_rows_leave_the_batch_without_changing_the_others(model_and_tok):
    model, tok = model_and_tok
    prompts = [tok.encode(t) for t in TEXTS]
    free = generate_paths(model, prompts, 1, Decoding(20), set(), pad_id=tok.pad_token_id)
    # make a token that the free runs produce early an end-of-sequence: rows end at different steps
    eos = {free[0][0][3]}
    ended = generate_paths(model, prompts, 1, Decoding(20), eos, pad_id=tok.pad_token_id)
    for (f,), (e,) in zip(free, ended):
        stop = next((i for i, t in enumerate(f) if t in eos), None)
        assert e == (f if stop is None else f[: stop + 1])
    assert any(len(e) < 20 for (e,) in ended) and any(len(e) == 20 for (e,) in ended)


def test_sampled_paths_are_reproducible_per_seed_and_k_per_prompt(model_and_tok):
    model, tok = model_and_tok
    prompts = [tok.encode(t) for t in TEXTS[:3]]
    d = Decoding(12, temperature=1.0, top_p=0.9)
    a = generate_paths(model, prompts, 4, d, set(), pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(1))
    b = generate_paths(model, prompts, 4, d, set(), pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(1))
    c = generate_paths(model, prompts, 4, d, set(), pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(2))
    assert a == b != c
    assert [len(paths) for paths in a] == [4, 4, 4] and all(len(p) == 12 for paths in a for p in paths)
    with pytest.raises(ValueError, match="greedy"):
        generate_paths(model, prompts, 2, Decoding(4), set())


def test_sampling_follows_temperature_top_k_top_p():
    """The draw is from softmax(logits / T) cut to the top-k, then to the smallest set reaching top_p."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05] + [0.0] * 60]).clamp_min(1e-9))
    rows = logits.repeat(20000, 1)
    draws = Counter(next_tokens(rows, Decoding(1, temperature=1.0, top_p=0.75), torch.Generator().manual_seed(0)).tolist())
    assert set(draws) == {0, 1}  # 0.5 + 0.3 reaches 0.75: tokens 2 and 3 are cut
    assert draws[0] / 20000 == pytest.approx(0.5 / 0.8, abs=0.02)
    draws = Counter(next_tokens(rows, Decoding(1, temperature=1.0, top_k=3), torch.Generator().manual_seed(0)).tolist())
    assert set(draws) == {0, 1, 2}
    assert draws[2] / 20000 == pytest.approx(0.15 / 0.95, abs=0.02)
    hot = Counter(next_tokens(rows, Decoding(1, temperature=4.0, top_k=2), torch.Generator().manual_seed(0)).tolist())
    assert hot[1] / 20000 == pytest.approx(0.3 ** 0.25 / (0.5 ** 0.25 + 0.3 ** 0.25), abs=0.02)
    assert next_tokens(logits, Decoding(1), None).tolist() == [0]


def test_a_stop_string_ends_a_path_and_a_stop_request_ends_the_batch(model_and_tok):
    model, tok = model_and_tok
    prompts = [tok.encode(t) for t in TEXTS[:2]]
    free = generate_paths(model, prompts, 1, Decoding(16), set(), pad_id=tok.pad_token_id)
    marker = free[0][0][5]
    cut = generate_paths(model, prompts, 1, Decoding(16), set(), pad_id=tok.pad_token_id,
                         stop_text=lambda ids: marker in ids)
    assert marker in cut[0][0] and len(cut[0][0]) < 16 and cut[0][0] == free[0][0][: len(cut[0][0])]
    calls = iter(range(100))
    stopped = generate_paths(model, prompts, 1, Decoding(16), set(), pad_id=tok.pad_token_id,
                             should_stop=lambda: next(calls) >= 3)
    assert all(len(p[0]) == 3 for p in stopped)


@pytest.mark.parametrize("same_length", [False, True])
def test_cascade_attention_over_the_shared_prefix_changes_nothing(model_and_tok, monkeypatch, same_length):
    """The prefix kept once and attended in a separate part gives the tokens of the prefix copied into every row,
    greedy and sampled, with padded tails and with tails of one length (where transformers passes no mask)."""
    import mixdistill.evaluate.decode as decode

    model, tok = model_and_tok
    exemplar = tok.encode(" ".join(TEXTS[:3]))
    tails = [TEXTS[3]] * 3 if same_length else TEXTS[3:]
    prompts = [exemplar + tok.encode(t) for t in tails]
    calls = []
    real = decode.cascade_attention
    monkeypatch.setattr(decode, "cascade_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))

    def run():
        greedy = generate_paths(model, prompts, 1, Decoding(16), set(), pad_id=tok.pad_token_id)
        sampled = generate_paths(model, prompts, 3, Decoding(16, temperature=1.0, top_p=0.9), set(),
                                 pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(3))
        return greedy, sampled

    cascaded = run()
    assert calls  # the cascade ran
    monkeypatch.setattr(decode, "_can_cascade", lambda model, cache: False)
    calls.clear()
    assert run() == cascaded and not calls
    assert model.config._attn_implementation != decode.CASCADE  # restored after each call


@pytest.mark.parametrize("q_len", [1, 5])
def test_cascade_attention_equals_attention_over_the_whole_sequence_with_grouped_heads(q_len):
    """Against sdpa over [prefix copied per row | tail], with 6 query heads on 2 key/value heads, a padded row and
    a row whose tail it cannot see (a padding query), in fp32."""
    from types import SimpleNamespace

    import mixdistill.evaluate.decode as decode

    g = torch.Generator().manual_seed(0)
    rows, heads, kv_heads, dim, prefix, tail = 3, 6, 2, 8, 7, q_len + 4
    query = torch.randn(rows, heads, q_len, dim, generator=g)
    key, value = (torch.randn(rows, kv_heads, tail, dim, generator=g) for _ in range(2))
    p_key, p_value = (torch.randn(1, kv_heads, prefix, dim, generator=g) for _ in range(2))
    allowed = torch.ones(rows, 1, q_len, prefix + tail, dtype=torch.bool)
    allowed[..., prefix:] = torch.ones(q_len, tail, dtype=torch.bool).tril(tail - q_len)
    allowed[1, ..., prefix : prefix + 2] = False  # row 1's tail starts with two padding slots
    allowed[2, :, 0, prefix:] = False  # row 2's first query sees only the prefix
    cache = SimpleNamespace(layers=[SimpleNamespace(prefix=(p_key, p_value))])
    token = decode._ACTIVE.set(cache)
    try:
        ours, _ = decode.cascade_attention(SimpleNamespace(layer_idx=0), query, key, value, allowed, scaling=0.3)
    finally:
        decode._ACTIVE.reset(token)
    whole_k = torch.cat([p_key.expand(rows, -1, -1, -1), key], dim=2)
    whole_v = torch.cat([p_value.expand(rows, -1, -1, -1), value], dim=2)
    theirs = torch.nn.functional.scaled_dot_product_attention(query, whole_k, whole_v, attn_mask=allowed, scale=0.3,
                                                              enable_gqa=True).transpose(1, 2)
    assert ours.shape == (rows, q_len, heads, dim)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
