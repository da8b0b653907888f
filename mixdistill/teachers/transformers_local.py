"""A local Hugging Face model as teacher: batched `generate` on a model directory, run off the event loop.

Prompts use the tokenizer's chat template when it has one (instruction-tuned models such as SmolLM2-Instruct), and
the completion rendering otherwise (base models), cut at the next "Question:". Calls cost nothing; tokens are counted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mixdistill.prompts import COMPLETION_STOP
from mixdistill.stopping import generation_stopper, raise_if_stopped
from mixdistill.teachers.base import Teacher, TeacherError, TeacherRequest, TeacherResult


class TransformersTeacher(Teacher):
    provider = "transformers"

    def __init__(self, spec, prices=None):
        super().__init__(spec, prices)
        self.model = None
        self.tokenizer = None

    def check(self) -> None:
        """The directory and tokenizer now; the weights on the first call, so a fully cached re-run never loads them."""
        super().check()
        path = Path(self.spec.path).expanduser()
        if not (path / "config.json").is_file():
            raise TeacherError(f"teacher {self.spec.label!r}: path: {path} is not a model directory (no config.json)")
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        except (OSError, ValueError) as e:
            raise TeacherError(f"teacher {self.spec.label!r}: cannot load the tokenizer in {path}: {str(e).splitlines()[0]}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self._path = path

    def _load_model(self):
        if self.model is None:
            from transformers import AutoModelForCausalLM

            try:
                import torch

                model = AutoModelForCausalLM.from_pretrained(self._path, dtype="auto").eval()
                self.model = model.to("cuda") if torch.cuda.is_available() else model
            except Exception as e:  # safetensors, torch and transformers each raise their own types
                raise TeacherError(f"cannot load the model in {self._path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        return self.model

    def classify(self, exc: BaseException):
        return "fatal" if isinstance(exc, TeacherError) else "fail"

    @property
    def workers(self) -> int:
        return 1  # one generate() at a time; parallelism comes from batching

    def chunks(self, requests: list[TeacherRequest]) -> list[list[TeacherRequest]]:
        # similar lengths in one batch means less padding
        ordered = sorted(requests, key=lambda r: (len(r.question), r.request_key))
        n = self.spec.batch_size
        return [ordered[i : i + n] for i in range(0, len(ordered), n)]

    @property
    def chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, r: TeacherRequest) -> str:
        if self.chat:
            return self.tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False)
        return r.prompt.completion(r.question)

    async def _call(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        return await asyncio.to_thread(self._generate, chunk)

    def _generate(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        import torch

        model, tok = self._load_model(), self.tokenizer
        s = chunk[0].sampling
        started = time.perf_counter()
        if s.seed is not None:
            torch.manual_seed(s.seed + chunk[0].sample_index)
        # chat templates already contain the special tokens they need
        enc = tok([self.render(r) for r in chunk], return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        enc = enc.to(model.device)
        sample = s.temperature > 0
        kwargs = {"do_sample": sample, "max_new_tokens": s.max_tokens, "pad_token_id": tok.pad_token_id}
        if sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p)
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs, stopping_criteria=generation_stopper())
        raise_if_stopped()
        new = out[:, enc["input_ids"].shape[1] :]
        latency = time.perf_counter() - started
        results = []
        configured = model.generation_config.eos_token_id
        eos = set(configured if isinstance(configured, list) else [configured]) | {tok.eos_token_id}
        eos.discard(None)
        for i, r in enumerate(chunk):
            ids = new[i].tolist()
            ended = next((j for j, t in enumerate(ids) if t in eos), None)
            kept = ids if ended is None else ids[:ended]
            text = tok.decode(kept, skip_special_tokens=True)
            stop = not self.chat and COMPLETION_STOP in text
            if stop:
                text = text.split(COMPLETION_STOP, 1)[0]
            prompt_tokens, completion_tokens = int(enc["attention_mask"][i].sum()), len(kept) + (ended is not None)
            results.append(
                TeacherResult(
                    r.request_key, "ok", text=text.strip(),
                    finish_reason="stop" if ended is not None or stop else "length",
                    prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    cost_usd=self.cost(prompt_tokens, completion_tokens), latency_s=latency / len(chunk),
                )
            )
        return results
