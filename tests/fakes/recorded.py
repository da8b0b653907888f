"""A responder for the fake servers that answers SVAMP prompts from the published teacher outputs.

PoT: the Codex (code-davinci-002) programs of Program-of-Thoughts (`svamp_s0_e-1_11_24_14_38.jsonl`, 999 of the 1000
problems; chal-1000 is missing there), wrapped in a ```python fence as a chat model would reply. CoT: the PaLM-540B
completions of distilling-step-by-step, which cover all 1000 problems through its 800/200 split.

The rendered prompt is mapped back to its problem by the question text of the last user message (the prompts put the
question after "Question:"). Every sample of a (question, mode) gets the one recorded answer. A prompt whose question
has no recording gets `NO_RECORDING`, a reply that is neither a program nor a CoT answer.
"""

from __future__ import annotations

import re
from pathlib import Path

from mixdistill.teachers.replay import load_recordings, normalize_question
from fakes.loopback import FakeRequest

POT_FILE = "program-of-thoughts/outputs/svamp_s0_e-1_11_24_14_38.jsonl"
COT_DIR = "distilling-step-by-step/datasets/svamp/llm"
NO_RECORDING = "I cannot answer this question."
_PREFIX = re.compile(r"^\s*question:\s*", re.IGNORECASE)


def request_mode(req: FakeRequest) -> str:
    """PoT prompts ask for a Python program in their system message."""
    system = next((m["content"] for m in req.messages if m["role"] == "system"), "")
    return "pot" if "python" in system.lower() else "cot"


def request_question(req: FakeRequest) -> str:
    return normalize_question(_PREFIX.sub("", req.last_user))


class RecordedSvamp:
    """`responder = RecordedSvamp(shared_data)`; `with fake_openai(responder=responder) as srv: ...`"""

    def __init__(self, data_dir: Path):
        self.recordings = {
            **load_recordings(Path(data_dir) / POT_FILE, "codex"),
            **load_recordings(Path(data_dir) / COT_DIR, "palm"),
        }
        self.misses = 0

    def __call__(self, req: FakeRequest) -> str:
        mode = request_mode(req)
        answers = self.recordings.get((request_question(req), mode))
        if not answers:
            self.misses += 1
            return NO_RECORDING
        return f"```python\n{answers[0]}\n```" if mode == "pot" else answers[0]
