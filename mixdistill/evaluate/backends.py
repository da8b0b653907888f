"""Where evaluation paths come from: local transformers (batched, adapters via peft), vLLM (LoRA adapters), any
OpenAI-compatible server, or recorded outputs replayed.

Every backend turns a batch of prompts into k completions each: greedy when k = 1, sampled with the recipe's
temperature / top-p / seed otherwise. Prompts are built here because their form depends on the backend (token ids
for a local student, chat messages for a server, nothing for a replay):

- `prompt: student`: the mode prefix + question (`mix.model_input`) in the training `prompt_template`, tokenised
  exactly as training did (`mixdistill.student.prompt_ids`: BOS + prompt, no EOS);
- `prompt: few-shot`: the teachers' CoT/PoT prompts (`mixdistill.prompts`), as chat messages, through the tokenizer's
  chat template when it has one, else as one completion text cut at the next "Question:".
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mixdistill.cpu import cpu_has_bf16
from mixdistill.errors import MixdistillError
from mixdistill.ids import canonical_json, content_hash
from mixdistill.mix import model_input
from mixdistill.prompts import COMPLETION_STOP, Prompt, load_prompt, prompt_task
from mixdistill.recipe import EvalRecipe, Sampling, TeacherSpec
from mixdistill.stopping import generation_stopper, raise_if_stopped
from mixdistill.student import DEFAULT_TEMPLATE, format_prompt, prompt_ids, trained_template
from mixdistill.tasks import Problem



# the fast loop (evaluate/decode.py) by version: bf16 paths differ between versions (2: cascade attention)
FAST_DECODER = "fast/2"

class EvalError(MixdistillError):
    """An evaluation cannot run as configured (model, adapter, backend, task split...)."""


NO_RECORDING = "no-recording"  # a replayed problem without a recorded output: its own status, not a backend error


@dataclass(frozen=True)
class PathRequest:
    """The prompt for the k paths of one (problem, mode)."""

    problem: Problem
    mode: str
    text: str | None = None  # prompt as text (student, or few-shot rendered for a base model)
    messages: tuple | None = None  # chat prompt (few-shot on a chat model or server)

    @property
    def input(self) -> str:
        """The prompt as stored in `eval_samples.input`."""
        return self.text if self.text is not None else canonical_json(list(self.messages or ()))


@dataclass(frozen=True)
class Completion:
    text: str | None
    tokens: int = 0  # generated tokens (end-of-sequence included when the path ended by itself)
    error: str | None = None


def path_seed(seed: int | None, problem_id: str, mode: str) -> int | None:
    """A seed derived from the recipe seed and a (problem, mode): vLLM and servers seed each prompt with it, so their
    paths do not depend on batching; transformers seeds each batch from its problems (batches are a fixed partition
    of the split, so a resumed run draws the same paths)."""
    if seed is None:
        return None
    return int(content_hash({"seed": seed, "problem": problem_id, "mode": mode}, length=8), 16) % (2**31)


def student_template(recipe: EvalRecipe) -> str:
    """The recipe's `prompt_template`, else the one the adapter was trained with, else "{input}\\n"."""
    if recipe.prompt_template is not None:
        return recipe.prompt_template
    return trained_template(recipe.adapter) or DEFAULT_TEMPLATE


def few_shot_prompt(problem: Problem, mode: str, shots: int) -> Prompt:
    return load_prompt(prompt_task(problem.task, problem.answer_type), mode, shots)


class Backend(Protocol):
    name: str

    def check(self) -> None:
        """Load the model / reach the server / read the recordings; raise EvalError with one line on a defect."""

    def identity(self) -> dict:
        """What defines the paths this backend produces (part of the eval id)."""

    def request(self, problem: Problem, mode: str) -> PathRequest: ...

    def generate(self, batch: list[PathRequest], k: int) -> list[list[Completion]]: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------ transformers
class TransformersBackend:
    """A local model (+ LoRA adapter) with batched `generate`; k paths per prompt via `num_return_sequences`."""

    name = "transformers"

    def __init__(self, recipe: EvalRecipe):
        self.recipe = recipe
        self.model = None
        self.tokenizer = None
        self.template = student_template(recipe) if recipe.prompt == "student" else None

    def identity(self) -> dict:
        """The decoder and the weights' dtype are part of it: bf16 and fp32 greedy paths can differ."""
        return {"backend": self.name, "model": self.recipe.model, "revision": self.recipe.revision,
                "adapter": adapter_identity(self.recipe.adapter), "prompt": prompt_identity(self.recipe, self.template),
                "decoder": FAST_DECODER if self.recipe.decoder == "fast" else self.recipe.decoder,
                "dtype": str(eval_dtype(self.recipe.precision)).removeprefix("torch.")}

    def check(self) -> None:
        import torch

        self._torch = torch
        self.tokenizer = load_eval_tokenizer(self.recipe)
        self.model = load_eval_model(self.recipe)
        self.model.eval()
        self.chat = self.recipe.prompt == "few-shot" and bool(getattr(self.tokenizer, "chat_template", None))

    def request(self, problem: Problem, mode: str) -> PathRequest:
        if self.recipe.prompt == "student":
            return PathRequest(problem, mode, text=format_prompt(self.template, model_input(mode, problem.question)))
        prompt = few_shot_prompt(problem, mode, self.recipe.shots)
        if self.chat:
            return PathRequest(problem, mode, messages=tuple(prompt.chat(problem.question)))
        return PathRequest(problem, mode, text=prompt.completion(problem.question))

    def _ids(self, r: PathRequest) -> list[int]:
        if r.messages is not None:
            return list(self.tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=True,
                                                           return_dict=False))
        return prompt_ids(self.tokenizer, r.text)

    def generate(self, batch: list[PathRequest], k: int) -> list[list[Completion]]:
        s: Sampling = self.recipe.sampling
        ids = [self._ids(r) for r in batch]
        generator = None
        if k > 1:
            # one seed per batch derived from its problems: a rerun (or a resumed run) draws the same paths
            seed = path_seed(s.seed, "|".join(r.problem.problem_id for r in batch), batch[0].mode)
            if seed is not None:
                generator = self._torch.Generator(device=self.model.device).manual_seed(seed)
        new = self._fast(ids, k, generator) if self.recipe.decoder == "fast" else self._generate(ids, k, generator)
        raise_if_stopped()
        eos = self._eos()
        results = []
        for i, _ in enumerate(batch):
            paths = []
            for seq in new[i]:
                ended = next((n for n, t in enumerate(seq) if t in eos), None)
                kept = seq if ended is None else seq[:ended]
                text = self.tokenizer.decode(kept, skip_special_tokens=True)
                if self._cut_at_question:
                    text = text.split(COMPLETION_STOP, 1)[0]
                paths.append(Completion(text, len(kept) + (ended is not None)))
            results.append(paths)
        return results

    @property
    def _cut_at_question(self) -> bool:
        """A base model's few-shot completion runs on into an exemplar of its own: cut at the next "Question:"."""
        return self.recipe.prompt == "few-shot" and not self.chat

    def _fast(self, ids: list[list[int]], k: int, generator) -> list[list[list[int]]]:
        from mixdistill.evaluate.decode import Decoding, generate_paths
        from mixdistill.stopping import stop_requested

        s = self.recipe.sampling
        decoding = Decoding(s.max_tokens) if k == 1 else Decoding(s.max_tokens, s.temperature, s.top_p)
        stop = (lambda seq: COMPLETION_STOP in self.tokenizer.decode(seq[-16:])) if self._cut_at_question else None
        return generate_paths(self.model, ids, k, decoding, self._eos(), pad_id=self.tokenizer.pad_token_id,
                              generator=generator, stop_text=stop, should_stop=stop_requested)

    def _generate(self, ids: list[list[int]], k: int, generator) -> list[list[list[int]]]:
        """transformers' own `generate` (`decoder: generate`): for models whose cache the fast loop cannot manage."""
        torch, s = self._torch, self.recipe.sampling
        width = max(map(len, ids))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        kwargs = {"max_new_tokens": s.max_tokens, "pad_token_id": pad, "num_return_sequences": k}
        if k > 1:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        device = self.model.device
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs,
                                      stopping_criteria=generation_stopper())
        new = out[:, width:].tolist()
        return [new[i * k : (i + 1) * k] for i in range(len(ids))]

    def _eos(self) -> set[int]:
        configured = self.model.generation_config.eos_token_id
        eos = set(configured if isinstance(configured, list) else [configured]) | {self.tokenizer.eos_token_id}
        eos.discard(None)
        return eos

    def close(self) -> None:
        self.model = None


def adapter_identity(adapter: Path | None) -> str | None:
    """An adapter is identified by its weights' content (a retrained adapter in the same folder is another model)."""
    if adapter is None:
        return None
    files = sorted(Path(adapter).glob("adapter_model.*"))
    if not files:
        return str(Path(adapter).resolve())
    import hashlib

    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def prompt_identity(recipe: EvalRecipe, template: str | None) -> dict:
    if recipe.prompt == "student":
        return {"kind": "student", "template": template}
    return {"kind": "few-shot", "shots": recipe.shots}


def check_adapter(recipe: EvalRecipe) -> dict | None:
    """The adapter's config, after checking it names the same base model as the recipe (when both are names)."""
    if recipe.adapter is None:
        return None
    path = Path(recipe.adapter)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise EvalError(f"adapter: {path} is not a LoRA adapter folder (no adapter_config.json)")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if base and base != recipe.model and Path(base).name != Path(recipe.model).name:
        raise EvalError(f"adapter: {path} was trained on {base!r}, not on model {recipe.model!r}")
    return config


def load_eval_tokenizer(recipe: EvalRecipe):
    """The adapter's tokenizer when it was saved with it (the training pad token included), else the base model's."""
    from transformers import AutoTokenizer

    source = recipe.adapter if recipe.adapter is not None and (Path(recipe.adapter) / "tokenizer_config.json").is_file() \
        else recipe.model
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=None if source == recipe.adapter else recipe.revision)
    except (OSError, ValueError) as e:
        raise EvalError(f"model: cannot load the tokenizer of {source}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def eval_dtype(precision: str):
    """The dtype an evaluation loads weights in. `auto`: the model's own on a GPU, bf16 on a CPU with native bf16,
    else the model's own ("auto" for transformers)."""
    import torch

    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    return torch.bfloat16 if not torch.cuda.is_available() and cpu_has_bf16() else "auto"


def load_eval_model(recipe: EvalRecipe):
    """Base model (+ adapter, merged for speed) on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    config = check_adapter(recipe)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = AutoModelForCausalLM.from_pretrained(recipe.model, revision=recipe.revision,
                                                     dtype=eval_dtype(recipe.precision))
    except (OSError, ValueError) as e:
        raise EvalError(f"model: cannot load {recipe.model}: {str(e).splitlines()[0]}") from None
    if config is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(recipe.adapter)).merge_and_unload()
        except (RuntimeError, ValueError, KeyError) as e:
            first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
            raise EvalError(f"adapter: {recipe.adapter} does not fit model {recipe.model}: {first}") from None
    return model.to(device)


# ------------------------------------------------------------------------------------------------ vLLM
class VLLMBackend(TransformersBackend):
    """vLLM offline inference (`LLM.generate`, `n` = k, one seed per prompt, LoRA through `LoRARequest`).

    Only the model and generation differ from the transformers backend: prompts are the same token ids."""

    name = "vllm"

    def identity(self) -> dict:
        return {"backend": self.name, "model": self.recipe.model, "revision": self.recipe.revision,
                "adapter": adapter_identity(self.recipe.adapter), "prompt": prompt_identity(self.recipe, self.template)}

    def check(self) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise EvalError("backend 'vllm' needs the vllm package (pip install vllm, on a CUDA machine)") from None
        self._sampling_params = SamplingParams
        config = check_adapter(self.recipe)
        self.tokenizer = load_eval_tokenizer(self.recipe)
        self.chat = self.recipe.prompt == "few-shot" and bool(getattr(self.tokenizer, "chat_template", None))
        kwargs = {"model": self.recipe.model, "revision": self.recipe.revision, "seed": self.recipe.sampling.seed or 0}
        if config is not None:
            kwargs.update(enable_lora=True, max_lora_rank=max(16, int(config.get("r", 16))))
        self.llm = LLM(**kwargs)
        self.lora = None
        if config is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("student", 1, str(Path(self.recipe.adapter).resolve()))

    def generate(self, batch: list[PathRequest], k: int) -> list[list[Completion]]:
        s = self.recipe.sampling
        stop = [COMPLETION_STOP] if self.recipe.prompt == "few-shot" and not self.chat else None
        params = [
            self._sampling_params(
                n=k, max_tokens=s.max_tokens, stop=stop,
                temperature=s.temperature if k > 1 else 0.0, top_p=s.top_p if k > 1 else 1.0,
                seed=path_seed(s.seed, r.problem.problem_id, r.mode) if k > 1 else None,
            )
            for r in batch
        ]
        prompts = [{"prompt_token_ids": self._ids(r)} for r in batch]
        outs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        return [[Completion(o.text, len(o.token_ids)) for o in out.outputs] for out in outs]

    def close(self) -> None:
        self.llm = None


# ------------------------------------------------------------------------------------------------ OpenAI-compatible
class OpenAIBackend:
    """Any OpenAI-compatible server (vLLM serve, llama.cpp, a hosted API): `/chat/completions` for few-shot prompts,
    `/completions` for a student's raw prompt. Retries, key handling and error classes are the teacher backend's."""

    name = "openai-compatible"

    def __init__(self, recipe: EvalRecipe):
        from mixdistill.teachers import make_teacher

        self.recipe = recipe
        self.template = student_template(recipe) if recipe.prompt == "student" else None
        spec = TeacherSpec(provider="openai-compatible", model=recipe.model, base_url=recipe.base_url,
                           api_key_env=recipe.api_key_env, max_concurrency=recipe.max_concurrency)
        self.teacher = make_teacher(spec)

    def identity(self) -> dict:
        return {"backend": self.name, "model": self.recipe.model, "prompt": prompt_identity(self.recipe, self.template)}

    def check(self) -> None:
        self.teacher.check()  # the key, when the server needs one, is read from the environment here

    def request(self, problem: Problem, mode: str) -> PathRequest:
        if self.recipe.prompt == "student":
            return PathRequest(problem, mode, text=format_prompt(self.template, model_input(mode, problem.question)))
        return PathRequest(problem, mode, messages=tuple(few_shot_prompt(problem, mode, self.recipe.shots).chat(problem.question)))

    def generate(self, batch: list[PathRequest], k: int) -> list[list[Completion]]:
        return asyncio.run(self._generate(batch, k))

    async def _generate(self, batch: list[PathRequest], k: int) -> list[list[Completion]]:
        gate = asyncio.Semaphore(self.recipe.max_concurrency)

        async def one(r: PathRequest) -> list[Completion]:
            async with gate:
                return await self._paths(r, k)

        try:
            return await asyncio.gather(*(one(r) for r in batch))
        finally:
            await self.teacher.aclose()  # the client belongs to this event loop

    async def _paths(self, r: PathRequest, k: int) -> list[Completion]:
        """k choices of one prompt; servers that ignore `n` are asked again for the rest (with the next seeds)."""
        from mixdistill.teachers import TeacherFatalError

        s = self.recipe.sampling
        seed = path_seed(s.seed, r.problem.problem_id, r.mode)
        out: list[Completion] = []
        while len(out) < k:
            body = {"model": self.recipe.model, "max_tokens": s.max_tokens, "n": k - len(out),
                    "temperature": s.temperature if k > 1 else 0.0, "top_p": s.top_p if k > 1 else 1.0}
            if k > 1 and seed is not None:
                body["seed"] = seed + len(out)
            path = "/chat/completions" if r.messages is not None else "/completions"
            body["messages" if r.messages is not None else "prompt"] = list(r.messages) if r.messages is not None else r.text
            try:
                raw = await self.teacher.with_retries(self._post, path, body)
                data = json.loads(raw)
                choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            except TeacherFatalError as e:
                raise EvalError(str(e)) from None
            except Exception as e:  # noqa: BLE001  (a path the server could not produce is a wrong path, not a failed run)
                error = self.teacher.describe(e)
                return out + [Completion(None, 0, error) for _ in range(k - len(out))]
            if not choices:
                return out + [Completion(None, 0, "the server returned no choices") for _ in range(k - len(out))]
            usage = (data.get("usage") or {}).get("completion_tokens")
            per = usage // len(choices) if isinstance(usage, int) else 0
            for c in choices[: k - len(out)]:
                text = (c.get("message") or {}).get("content") if r.messages is not None else c.get("text")
                out.append(Completion(text, per) if isinstance(text, str) else Completion(None, 0, "no text in choice"))
        return out

    async def _post(self, path: str, body: dict) -> str:
        return await self.teacher.client.post(path, body=body, cast_to=str)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------ replay
class ReplayBackend:
    """Recorded outputs (any format the replay teacher reads) served as paths: a published teacher as a baseline
    row, and the proof that voting over recorded samples gives the numbers re-executing them gives."""

    name = "replay"

    def __init__(self, recipe: EvalRecipe):
        self.recipe = recipe
        self.recordings: dict[str, dict[str, list[str]]] = {}

    def identity(self) -> dict:
        return {"backend": self.name, "model": self.recipe.model,
                "recordings": {m: str(p) for m, p in sorted((self.recipe.recordings or {}).items())}}

    def check(self) -> None:
        from mixdistill.teachers import TeacherError
        from mixdistill.teachers.replay import load_recordings

        for mode in self.recipe.modes:
            path = self.recipe.recordings[mode]
            try:
                found = load_recordings(path, self.recipe.model, self.recipe.fields)
            except TeacherError as e:
                raise EvalError(f"recordings.{mode}: {e}") from None
            self.recordings[mode] = {q: texts for (q, m), texts in found.items() if m == mode}
            if not self.recordings[mode]:
                raise EvalError(f"recordings.{mode}: {path} holds no {mode} outputs")
            most = max(len(t) for t in self.recordings[mode].values())
            if self.recipe.k > most:
                raise EvalError(f"k: {self.recipe.k} paths per mode, but recordings.{mode} holds at most {most} per question")

    def request(self, problem: Problem, mode: str) -> PathRequest:
        return PathRequest(problem, mode, text=problem.question)

    def generate(self, batch: list[PathRequest], k: int) -> list[list[Completion]]:
        from mixdistill.teachers.replay import normalize_question

        out = []
        for r in batch:
            texts = self.recordings[r.mode].get(normalize_question(r.problem.question), [])
            out.append([Completion(texts[i]) if i < len(texts) else Completion(None, 0, NO_RECORDING)
                        for i in range(k)])
        return out

    def unmatched(self, problems: list[Problem], mode: str) -> tuple[int, list[str]]:
        """Recorded questions of `mode` that match none of `problems` (count, first examples)."""
        from mixdistill.teachers.replay import unmatched_recordings

        recorded = {(q, mode): texts for q, texts in self.recordings[mode].items()}
        return unmatched_recordings(recorded, [(p.question, mode) for p in problems])

    def close(self) -> None:
        pass


BACKENDS = {"transformers": TransformersBackend, "vllm": VLLMBackend, "openai-compatible": OpenAIBackend,
            "replay": ReplayBackend}


def make_backend(recipe: EvalRecipe) -> Backend:
    return BACKENDS[recipe.backend](recipe)
