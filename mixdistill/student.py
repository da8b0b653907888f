"""The student's prompt format, shared by training (which defines it) and evaluation and model cards (which must
reproduce it token for token).

A prompt is the corpus `input` (mode prefix + question) in the training recipe's `prompt_template`, tokenised as
BOS (when the tokenizer has one) + the prompt, with no EOS. Tokenizers disagree on whether `tokenizer(text)` adds BOS
(Llama's does, SmolLM2's does not), so the BOS is added here explicitly and the text is encoded without special
tokens. The adapter folder keeps the lineage file `training_info.json`, which names the template it was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_TEMPLATE = "{input}\n"
INFO_FILE = "training_info.json"  # written next to the adapter by `mixdistill train`


def format_prompt(template: str, model_input: str) -> str:
    """The text the student sees before its rationale."""
    return template.replace("{input}", model_input)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt as training sees it: BOS (if the tokenizer has one) + the prompt, no EOS."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]


def read_training_info(adapter: str | Path) -> dict[str, Any] | None:
    """The adapter's lineage file, or None when the folder has none."""
    path = Path(adapter) / INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def trained_template(adapter: str | Path | None) -> str | None:
    """The `prompt_template` an adapter was trained with, when its lineage file says."""
    info = read_training_info(adapter) if adapter is not None else None
    return ((info or {}).get("recipe") or {}).get("prompt_template") or None
