"""CoT and PoT few-shot prompts, stored as YAML files next to this module and identified by content hash.

Each `<task>/<mode>.yaml` holds a `system` instruction, a `user` template containing `{question}`, and exemplars
written by this team. A `Prompt` is that template plus the first `shots` exemplars; its `prompt_id` hashes exactly
what is sent, so editing an exemplar or changing `shots` gives a new id (and new request keys), never a stale cache hit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import orjson
import yaml

from mixdistill.errors import MixdistillError
from mixdistill.ids import canonical_json, content_hash

PROMPTS_DIR = Path(__file__).parent
MODES = ("cot", "pot")
# Custom tasks borrow the built-in prompts that fit their answer type.
FALLBACK_BY_ANSWER_TYPE = {"number": "gsm8k", "bool": "strategyqa"}
COMPLETION_STOP = "\nQuestion:"


class PromptError(MixdistillError):
    """A prompt file is missing or invalid."""


@dataclass(frozen=True)
class Exemplar:
    question: str
    rationale: str


@dataclass(frozen=True)
class Prompt:
    task: str
    mode: str
    name: str
    system: str
    user: str
    exemplars: tuple[Exemplar, ...]

    @cached_property  # asked once per stored row: hash once
    def prompt_id(self) -> str:
        return content_hash({"template": self.template_json, "exemplars": self.exemplars_json})

    @property
    def template_json(self) -> str:
        return canonical_json({"system": self.system, "user": self.user, "mode": self.mode})

    @property
    def exemplars_json(self) -> str:
        return json.dumps([{"question": e.question, "rationale": e.rationale} for e in self.exemplars], ensure_ascii=False)

    def to_row(self) -> dict:
        return {
            "prompt_id": self.prompt_id,
            "task": self.task,
            "mode": self.mode,
            "name": self.name,
            "template": self.template_json,
            "exemplars": self.exemplars_json,
        }

    def user_message(self, question: str) -> str:
        return self.user.replace("{question}", question)

    def _shown(self, rationale: str) -> str:
        # Chat models answer in the style of the exemplars; fencing PoT programs makes the code easy to find.
        return f"```python\n{rationale}\n```" if self.mode == "pot" else rationale

    def chat(self, question: str) -> list[dict[str, str]]:
        """System message, exemplars as alternating user/assistant turns, then the question."""
        messages = [{"role": "system", "content": self.system}]
        for ex in self.exemplars:
            messages.append({"role": "user", "content": self.user_message(ex.question)})
            messages.append({"role": "assistant", "content": self._shown(ex.rationale)})
        messages.append({"role": "user", "content": self.user_message(question)})
        return messages

    @cached_property
    def _chat_head_json(self) -> bytes:
        """JSON of `chat()` without the question's message and the closing bracket: the same for every question."""
        return orjson.dumps(self.chat("")[:-1])[:-1]

    def chat_json(self, question: str) -> bytes:
        """`chat(question)` as compact UTF-8 JSON, the few-shot part (~2 KB) encoded once per prompt, not per
        request."""
        last = orjson.dumps({"role": "user", "content": self.user_message(question)})
        return b"".join((self._chat_head_json, b",", last, b"]"))

    def completion(self, question: str) -> str:
        """One text for base models; generation should stop at `COMPLETION_STOP`."""
        blocks = [self.system]
        blocks += [f"{self.user_message(ex.question)}\nAnswer:\n{ex.rationale}" for ex in self.exemplars]
        blocks.append(f"{self.user_message(question)}\nAnswer:\n")
        return "\n\n".join(blocks)


def prompt_task(task: str, answer_type: str) -> str:
    """Which prompt family a task uses: its own, else the built-in one for its answer type."""
    if (PROMPTS_DIR / task).is_dir():
        return task
    return FALLBACK_BY_ANSWER_TYPE[answer_type]


def load_prompt(task: str, mode: str, shots: int, root: Path | None = None) -> Prompt:
    """Read `<root>/<task>/<mode>.yaml` and keep the first `shots` exemplars; every defect is one clear line."""
    if mode not in MODES:
        raise PromptError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    path = (root or PROMPTS_DIR) / task / f"{mode}.yaml"
    if not path.is_file():
        raise PromptError(f"no {mode} prompt for task {task!r}: {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise PromptError(f"{path}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise PromptError(f"{path}: a prompt file must be a YAML mapping")
    system, user = str(data.get("system") or "").strip(), str(data.get("user") or "").strip()
    if not system:
        raise PromptError(f"{path}: system: the prompt template is empty")
    if "{question}" not in user:
        raise PromptError(f"{path}: user: the template must contain {{question}}")
    raw = data.get("exemplars") or []
    exemplars = []
    for i, ex in enumerate(raw):
        if not isinstance(ex, dict) or not str(ex.get("question", "")).strip() or not str(ex.get("rationale", "")).strip():
            raise PromptError(f"{path}: exemplars.{i}: needs a non-empty 'question' and 'rationale'")
        exemplars.append(Exemplar(str(ex["question"]).strip(), str(ex["rationale"]).strip()))
    if shots > len(exemplars):
        raise PromptError(f"shots: {shots} requested but {path} has only {len(exemplars)} exemplars")
    return Prompt(
        task=task, mode=mode, name=f"{task}/{mode}/{shots}-shot", system=system, user=user,
        exemplars=tuple(exemplars[:shots]),
    )
