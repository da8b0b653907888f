"""A tiny randomly initialised Llama student with a BPE tokenizer trained on given texts.

For smoke runs and tests on a CPU: the same code path as a 7B student, in seconds, with nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def build_tokenizer(texts: Iterable[str], vocab_size: int = 600):
    """A byte-level BPE tokenizer (no pad token, like Llama-2's) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL.values()), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def tiny_llama_config(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 1024):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        bos_token_id=0, eos_token_id=1, tie_word_embeddings=False,
    )


def build_tiny_student(texts: Iterable[str], out_dir: Path, *, seed: int = 0, vocab_size: int = 600) -> Path:
    """Save a tiny Llama + its tokenizer to `out_dir` (loadable by `AutoModelForCausalLM.from_pretrained`)."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer))
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
