"""Recipes: the YAML files a user copies and edits, validated by pydantic before any work starts.

Four kinds: `BuildRecipe` (tasks x teachers x modes -> a corpus), `TrainRecipe` (student + LoRA on a corpus),
`EvalRecipe` (model x task split x modes/paths) and `ReproduceRecipe` (the paper's table: one corpus, three students
and every eval row, derived from shared train / eval settings). Unknown keys are errors, so a typo never silently falls back to a
default. The MD paper publishes no prompts, sample counts or hyper-parameters: every such choice is a field here with
a documented default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mixdistill.errors import RecipeError
from mixdistill.settings import HOME_ENV, ModelRef, RecipePath, expand_path, is_model_path
from mixdistill.tasks import TASKS, CustomTask, HubSource

Mode = Literal["cot", "pot"]
CotReading = Literal["stated", "expression"]  # mixdistill.verify.answers.COT_READINGS
PotConvention = Literal["printed", "first-of-tuple"]  # mixdistill.verify.rules.POT_CONVENTIONS


class ReplayFields(BaseModel):
    """Where a replayed JSON/JSONL keeps the question, the response and the mode (`mode` may instead be the mode
    itself, `cot` or `pot`, for a file of one mode)."""

    model_config = ConfigDict(extra="forbid")
    question: str = "question"
    response: str = "response"
    mode: str = "mode"


def _env_var_name(value: str) -> str:
    if not value.replace("_", "").isalnum():
        raise ValueError("must be the NAME of an environment variable, not a key")
    return value


EnvVarName = Annotated[str, AfterValidator(_env_var_name)]


def _http_url(value: str) -> str:
    """Checked, never rewritten: the URL as written is part of the teacher's id (and so of every cached request key)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL (e.g. http://localhost:8000/v1)")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    return value


HttpURL = Annotated[str, AfterValidator(_http_url)]
Provider = Literal["openai", "anthropic", "openai-compatible", "transformers", "replay"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Deferred(_Model):
    """A recipe that builds its validator when it first validates, so a command pays only for the recipes it reads
    (train, eval and reproduce recipes are most of this module's 30-50 ms import). Only top-level recipes: a nested
    model dumped on its own (`TeacherSpec.model_dump`) would build its schema a second time (20 ms)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class TaskRef(_Model):
    """A built-in task split (`task: svamp, split: train`) or a custom one (`custom: {...}`)."""

    task: str | None = None
    split: str | None = Field(None, description="defaults to the task's first split")
    custom: CustomTask | None = None
    limit: int | None = Field(None, ge=1, description="use only the first N problems (smoke runs)")
    source: Literal["files", "hub"] = Field("files", description="built-in task: the upstream files in the data "
                                            "dir, or a Hub dataset via datasets.load_dataset")
    hub: str | None = Field(None, description="source hub: dataset id (default: the task's known public copy) or a "
                            "local dataset folder")
    hub_config: str | None = None
    revision: str | None = Field(None, description="source hub: the dataset revision (commit sha or tag) to pin")

    @model_validator(mode="after")
    def _check(self) -> "TaskRef":
        if (self.task is None) == (self.custom is None):
            raise ValueError("give exactly one of 'task' or 'custom'")
        if self.source == "files" and (self.hub or self.hub_config or self.revision):
            raise ValueError("hub, hub_config and revision need source: hub")
        if self.source == "hub":
            if self.task is None or self.task not in TASKS:
                raise ValueError("source: hub applies to a built-in task (custom tasks name their own `hub`)")
            if self.revision is None:
                raise ValueError("source: hub needs revision (the dataset commit sha or tag), so the problems are pinned")
        if self.task is not None:
            if self.task not in TASKS:
                raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
            if self.source == "files" and self.split is not None and self.split not in TASKS[self.task].splits:
                raise ValueError(f"task {self.task!r} has no split {self.split!r}; splits: {', '.join(TASKS[self.task].splits)}")
        return self

    @property
    def name(self) -> str:
        return self.task or self.custom.name

    @property
    def split_name(self) -> str:
        if self.custom is not None:
            return self.custom.split
        if self.source == "hub":
            return self.split or TASKS[self.task].hub.split
        return self.split or TASKS[self.task].splits[0]

    @property
    def loader(self) -> "str | CustomTask | HubSource":
        """What `tasks.load_problems` takes for this reference."""
        if self.custom is not None:
            return self.custom
        if self.source == "hub":
            known = TASKS[self.task].hub
            return HubSource(self.task, self.hub or known.id, self.hub_config if self.hub else known.config,
                             self.revision)
        return self.task


class Sampling(_Model):
    """Decoding settings sent to the teacher. Greedy for sample 0 is not forced: set temperature 0 for that."""

    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    seed: int | None = None


class Prices(_Model):
    """USD per million tokens; overrides the built-in price table for this teacher."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class Reasoning(_Model):
    """How much a reasoning teacher thinks: an effort level, a thinking-token budget, or both where the provider
    takes both. Each backend maps it to its wire format and refuses, before any request, what its model family
    cannot take (`Teacher.check_sampling`)."""

    effort: Literal["low", "medium", "high"] | None = None
    budget_tokens: int | None = Field(None, ge=1, description="thinking tokens (Anthropic: >= 1024, < max_tokens)")

    @model_validator(mode="after")
    def _some(self) -> "Reasoning":
        if self.effort is None and self.budget_tokens is None:
            raise ValueError("give effort (low|medium|high) and/or budget_tokens, or drop reasoning")
        return self


# A fleet's servers answer as one teacher (their URLs are not part of its id), so a trailing "/" is dropped to make
# duplicates visible and paths join cleanly.
FleetURL = Annotated[HttpURL, AfterValidator(lambda value: value.rstrip("/"))]


class TeacherSpec(_Model):
    """One teacher: a provider, a model and how to reach it. Keys come from the environment, never from the recipe."""

    name: str | None = Field(None, description="label in the registry; defaults to provider/model")
    provider: Provider
    model: str
    base_url: HttpURL | None = Field(None, description="for openai-compatible servers (vLLM, llama.cpp, Ollama, ...)")
    base_urls: list[FleetURL] | None = Field(
        None, min_length=1, description="openai-compatible: a fleet of servers of the same model (least-in-flight routing)"
    )
    reasoning: Reasoning | None = Field(None, description="reasoning models: {effort} and/or {budget_tokens}")
    api: Literal["chat", "responses"] = Field("chat", description="openai: Chat Completions or the Responses API")
    api_key_env: EnvVarName | None = Field(None, description="environment variable holding the key; provider default if unset")
    path: RecipePath | None = Field(None, description="local model dir (transformers) or recorded-output file (replay)")
    fields: ReplayFields | None = Field(None, description="replay: field names of a JSON/JSONL of other records")
    batch: bool = Field(False, description="use the provider's Batch API (half price, hours of latency)")
    max_concurrency: int = Field(16, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_retries: int = Field(6, ge=0)
    retry_backoff_s: float = Field(1.0, gt=0, description="base of the exponential backoff (full jitter)")
    timeout_s: float = Field(120, gt=0)
    prices: Prices | None = None
    n_per_call: int = Field(8, ge=1, description="samples of one prompt per API call (OpenAI n>1); 1 turns it off")
    batch_size: int = Field(8, ge=1, description="local transformers: prompts per generate() call")
    batch_poll_s: float = Field(30, gt=0, description="Batch API: seconds between status polls")
    license: str | None = Field(None, description="replay: license of recordings that are not a known published source")
    source: str | None = Field(None, description="replay: where those recordings were published (URL or repo@commit)")



    @model_validator(mode="after")
    def _check(self) -> "TeacherSpec":
        if self.base_urls is not None:
            if self.provider != "openai-compatible":
                raise ValueError("base_urls: only provider 'openai-compatible' takes a fleet of servers")
            if self.base_url is not None:
                raise ValueError("give base_url (one server) or base_urls (a fleet), not both")
            dupes = sorted({u for u in self.base_urls if self.base_urls.count(u) > 1})
            if dupes:
                raise ValueError(f"base_urls: listed twice: {', '.join(dupes)}")
        if self.provider == "openai-compatible" and not (self.base_url or self.base_urls):
            raise ValueError("provider 'openai-compatible' needs base_url (or base_urls)")
        if self.api != "chat" and self.provider != "openai":
            raise ValueError(f"api: {self.api!r} is an OpenAI API; provider {self.provider!r} speaks its own")
        if self.provider in ("transformers", "replay") and self.path is None:
            raise ValueError(f"provider {self.provider!r} needs path")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.provider}/{self.model}"


class Budget(_Model):
    """Stop a build cleanly when either limit is reached (None: no limit)."""

    max_cost_usd: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)


class MixPolicy(_Model):
    """How verified rationales become a corpus (the paper's "well-balanced mixed thought data")."""

    k_per_mode: int = Field(1, ge=1, description="keep at most k verified rationales per problem and mode")
    balance_modes: bool = Field(True, description="keep equal CoT and PoT counts per problem")
    require_agreement: bool = Field(False, description="keep a problem only if both modes have a correct rationale")
    teacher_quotas: dict[str, float] | None = Field(None, description="teacher label -> max share of rows")
    validation_fraction: float = Field(0.05, ge=0, lt=1, description="share of problems held out, split by problem")
    seed: int = 0
    rationale: Literal["answer", "trace-and-answer"] = Field(
        "answer", description="reasoning teachers: the final answer alone, or the reasoning trace before it"
    )
    max_rationale_tokens: int | None = Field(
        None, ge=1, description="drop rationales longer than this (approximate tokens: words, numbers, punctuation)"
    )
    exclude: Literal["auto"] | list[TaskRef] = Field(
        "auto",
        description="evaluation splits whose problems must never enter the corpus; 'auto': the standard evaluation "
        "split of every built-in task the recipe uses (svamp/test, gsm8k/test, strategyqa/dev)",
    )


class BuildRecipe(_Model):
    kind: Literal["build"] = "build"
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    version: str = Field("0.1.0", pattern=r"^\d+\.\d+\.\d+$", description="semver of the corpus")
    description: str = ""
    tasks: list[TaskRef] = Field(min_length=1)
    teachers: list[TeacherSpec] = Field(min_length=1)
    modes: list[Mode] = Field(default_factory=lambda: ["cot", "pot"], min_length=1)
    samples: dict[Mode, int] = Field(
        default_factory=lambda: {"cot": 1, "pot": 1}, description="samples per problem and mode"
    )
    shots: int = Field(4, ge=0, description="few-shot exemplars in each prompt")
    sampling: Sampling = Field(default_factory=Sampling)
    rule: str = Field("strict", description="answer-equivalence rule used for verdicts")
    cot_reading: CotReading = Field("stated", description="CoT answer reading: stated | expression (README)")
    pot_conventions: list[PotConvention] = Field(
        default_factory=list, description="opt-in PoT answers beyond ans/solution(): printed, first-of-tuple"
    )
    mix: MixPolicy = Field(default_factory=MixPolicy)
    budget: Budget = Field(default_factory=Budget)

    @model_validator(mode="after")
    def _check(self) -> "BuildRecipe":
        labels = [t.label for t in self.teachers]
        dupes = {label for label in labels if labels.count(label) > 1}
        if dupes:
            raise ValueError(f"teacher names must be unique; repeated: {', '.join(sorted(dupes))}")
        for mode in self.modes:
            if self.samples.get(mode, 0) < 1:
                raise ValueError(f"samples.{mode} must be >= 1 for a listed mode")
        unknown = sorted(set(self.mix.teacher_quotas or {}) - set(labels))
        if unknown:
            raise ValueError(f"mix.teacher_quotas: unknown teacher {unknown[0]!r}; teachers: {', '.join(labels)}")
        return self

    def preflight(self) -> list[str]:
        """What `build` refuses before anything is paid for: building from an evaluation split (contamination)."""
        for t in self.tasks:
            if self.mix.exclude == "auto" and t.task is not None and t.split_name in TASKS[t.task].eval_splits:
                return [f"tasks: {t.name}/{t.split_name} is the task's evaluation split; build from a training split "
                        "or set mix.exclude explicitly"]
            if self.mix.exclude != "auto" and any((x.name, x.split_name) == (t.name, t.split_name) for x in self.mix.exclude):
                return [f"tasks: {t.name}/{t.split_name} is also listed in mix.exclude: nothing could be kept"]
        return []


class LoraSettings(_Model):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    qlora: bool = Field(False, description="load the base model in 4-bit (bitsandbytes)")


class CorpusRef(_Model):
    """Where training data comes from: a registry corpus, a Parquet export, or a Hub dataset at a revision."""

    name: str | None = None
    version: str | None = None
    parquet: RecipePath | None = None
    hub: str | None = None
    revision: str | None = None
    config: Literal["cot", "pot", "mixed"] = "mixed"


    @model_validator(mode="after")
    def _one(self) -> "CorpusRef":
        # `name` + `parquet` is allowed: a registry corpus whose export lives at that path (rows checked against it)
        if self.name is None and sum(x is not None for x in (self.parquet, self.hub)) != 1:
            raise ValueError("give exactly one of 'name' (registry corpus), 'parquet' or 'hub'")
        if self.name is not None and self.hub is not None:
            raise ValueError("give either 'name' (registry corpus) or 'hub', not both")
        if self.name is not None and self.version is None:
            raise ValueError("a registry corpus needs 'version' (e.g. version: 0.1.0)")
        if self.revision is not None and self.hub is None:
            raise ValueError("'revision' applies to a Hub dataset ('hub')")
        return self

    @property
    def label(self) -> str:
        """Human-readable lineage: `name@version`, `hub-id@revision` or the Parquet path."""
        if self.name is not None:
            return f"{self.name}@{self.version}"
        if self.hub is not None:
            return f"{self.hub}@{self.revision or 'main'}"
        return str(self.parquet)


class TrainRecipe(_Deferred):
    kind: Literal["train"] = "train"
    name: str
    student: ModelRef = Field(description="base model id or local path (`~`, `${VARS}` expanded; must exist)")
    revision: str | None = None
    corpus: CorpusRef
    output_dir: RecipePath
    lora: LoraSettings = Field(default_factory=LoraSettings)
    mode_weights: dict[Mode, float] = Field(default_factory=lambda: {"cot": 1.0, "pot": 1.0})
    max_length: int = Field(1024, ge=16)
    epochs: float = Field(3, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation: int = Field(4, ge=1)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    gradient_checkpointing: bool = True
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    seed: int = 0
    # --- data: how rows become examples
    prompt_template: str = Field("{input}\n", description="model input around the corpus `input` (mode prefix included)")
    train_split: str = "train"
    eval_split: str | None = Field("validation", description="held-out split for per-mode eval loss; None: no eval")
    mode_mix: dict[Mode, float] | None = Field(
        None, description="target share of each mode (e.g. {cot: 1, pot: 1}); larger modes are down-sampled"
    )
    overlength: Literal["drop", "error"] = Field(
        "drop", description="rows longer than max_length are dropped and counted, or stop the run; never truncated"
    )
    limit: int | None = Field(None, ge=1, description="use only the first N training rows (smoke runs)")
    pad_token: str | None = Field(None, description="pad token when the tokenizer has none; default: unk, else eos")
    # --- optimisation and bookkeeping
    max_steps: int | None = Field(None, ge=1, description="stop after N optimiser steps (overrides epochs)")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    group_by_length: bool = Field(True, description="batch rows of similar length (less padding)")
    attn_implementation: str | None = Field("sdpa", description="transformers attention backend")
    compile: bool = Field(False, description="torch.compile each decoder layer (GPU; +43% tokens/s in bench train)")
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(200, ge=1)
    save_total_limit: int | None = Field(3, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="default: save_steps")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores but one up to 4 cores, else all")


    def preflight(self) -> list[str]:
        """What `train` checks before a model is loaded: a local student exists."""
        return _missing_paths(("student", self.student))

    @model_validator(mode="after")
    def _check_train(self) -> "TrainRecipe":
        if "{input}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {input}")
        for field in ("mode_weights", "mode_mix"):
            values = getattr(self, field) or {}
            if any(v < 0 for v in values.values()):
                raise ValueError(f"{field}: weights must be >= 0")
        if self.mode_mix is not None and sum(self.mode_mix.values()) <= 0:
            raise ValueError("mode_mix: at least one mode needs a share > 0")
        return self


class EvalRecipe(_Deferred):
    """Evaluate one model on task splits: k paths per mode (greedy for k=1), votes within each mode and pooled (MD).

    `prompt: student` prompts a trained student exactly as it was trained (mode prefix + question in the training
    recipe's `prompt_template`, read from the adapter's training_info.json unless given); `prompt: few-shot` uses the
    teachers' CoT/PoT few-shot prompts (a teacher or any base model as the baseline row).
    """

    kind: Literal["eval"] = "eval"
    name: str
    label: str | None = Field(None, description="row name in reports; default: the adapter's run folder, else model")
    model: ModelRef = Field(description="base model id/path (`~`, `${VARS}` expanded; must exist), or the model name "
                            "on an OpenAI-compatible server")
    revision: str | None = None
    adapter: RecipePath | None = Field(None, description="LoRA adapter folder (transformers, vllm)")
    backend: Literal["transformers", "vllm", "openai-compatible", "replay"] = "transformers"
    base_url: HttpURL | None = None
    api_key_env: EnvVarName | None = Field(None, description="environment variable holding the server's key, if it needs one")
    recordings: dict[Mode, RecipePath] | None = Field(None, description="replay: recorded outputs per mode (teacher formats)")
    fields: ReplayFields | None = Field(None, description="replay: field names of a JSON/JSONL of other records")
    prompt: Literal["student", "few-shot"] = "student"
    prompt_template: str | None = Field(None, description="student: default the adapter's training template, else {input}\\n")
    shots: int = Field(4, ge=0, description="few-shot: exemplars per prompt")
    tasks: list[TaskRef] = Field(min_length=1)
    modes: list[Mode] = Field(default_factory=lambda: ["cot", "pot"], min_length=1)
    k: int = Field(1, ge=1, le=256, description="sampled paths per mode (1 = single-path greedy)")
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.7), description="seed defaults to 0")
    mode_weights: dict[Mode, float] = Field(default_factory=lambda: {"cot": 1.0, "pot": 1.0})
    tie_break: list[Mode] = Field(
        default_factory=lambda: ["pot", "cot"], description="MD vote ties: the answer met first in this mode order wins"
    )
    rule: str = "strict"
    cot_reading: CotReading = Field("stated", description="CoT answer reading: stated | expression (README)")
    pot_conventions: list[PotConvention] = Field(
        default_factory=list, description="opt-in PoT answers beyond ans/solution(): printed, first-of-tuple"
    )
    batch_size: int = Field(8, ge=1, description="problems per generate() call (x k sequences)")
    max_concurrency: int = Field(16, ge=1, description="openai-compatible: requests in flight")
    program_timeout_s: float = Field(2.0, gt=0, description="wall-clock limit per PoT program")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores but one up to 4 cores, else all")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="transformers: weights' dtype; auto = the model's own, bf16 on a CPU with native bf16")
    decoder: Literal["fast", "generate"] = Field(
        "fast", description="transformers: mixdistill's decoding loop (shared prefix, top-k sampling, finished rows "
        "dropped) or transformers' generate()")

    def preflight(self) -> list[str]:
        """What `eval` checks before a model is loaded: a local model and the adapter exist."""
        model = ("model", self.model) if self.backend in ("transformers", "vllm") else ("model", "")
        return _missing_paths(model, ("adapter", str(self.adapter) if self.adapter else ""))

    @model_validator(mode="after")
    def _check_eval(self) -> "EvalRecipe":
        if self.k > 1 and self.sampling.temperature == 0:
            raise ValueError("sampling.temperature: k > 1 needs a temperature > 0 (greedy decoding gives k identical paths)")
        if self.backend == "openai-compatible" and not self.base_url:
            raise ValueError("base_url: backend 'openai-compatible' needs base_url")
        if self.backend == "replay" and not self.recordings:
            raise ValueError("recordings: backend 'replay' needs recordings (a file or folder per mode)")
        if self.backend == "replay" and any(m not in self.recordings for m in self.modes):
            raise ValueError(f"recordings: give one per evaluated mode ({', '.join(self.modes)})")
        if self.adapter is not None and self.backend not in ("transformers", "vllm"):
            raise ValueError("adapter: only the transformers and vllm backends load adapters")
        if self.prompt_template is not None and "{input}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {input}")
        if sorted(self.tie_break) != ["cot", "pot"]:
            raise ValueError("tie_break: list both modes once, e.g. [pot, cot]")
        if any(w < 0 for w in self.mode_weights.values()):
            raise ValueError("mode_weights: weights must be >= 0")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError("modes: each mode once")
        if self.sampling.seed is None:  # seed 0: sampled paths are reproducible and a resumed run draws the same ones
            self.sampling = self.sampling.model_copy(update={"seed": 0})
        return self



def _missing_paths(*fields: tuple[str, str]) -> list[str]:
    return [f"{name}: model path {value} does not exist" for name, value in fields
            if value and is_model_path(value) and not Path(value).exists()]


# Fields of the derived train / eval recipes that the reproduction sets per row (the rest are the shared settings).
_ROW_TRAIN_FIELDS = ("kind", "name", "student", "corpus", "output_dir")
_ROW_EVAL_FIELDS = ("kind", "name", "label", "model", "adapter", "prompt", "modes", "tasks")
DEMO_STUDENT = "${MIXDISTILL_HOME}/models/SmolLM2-135M-Instruct"  # where `mixdistill fetch-demo-model` puts it


def _derived(kind: type[BaseModel], settings: dict, row_fields: tuple[str, ...], placeholders: dict) -> dict:
    """Shared settings checked by building the recipe they will become (so new fields of that recipe just work)."""
    taken = sorted(set(settings) & set(row_fields))
    if taken:
        raise ValueError(f"{taken[0]}: set by the reproduction for each row; leave it out")
    try:
        kind.model_validate({**settings, **placeholders})
    except ValidationError as e:
        raise ValueError("; ".join(validation_lines(e))) from None
    return settings


def _eval_parts(settings: dict) -> tuple[TaskRef, int, dict]:
    """A reproduction's `eval:` as (task split with the limit, multi-path k, the EvalRecipe fields shared by all)."""
    ref = settings.get("task", {"task": "svamp", "split": "test"})
    try:
        task = TaskRef.model_validate({**ref, "limit": settings.get("limit")})
    except ValidationError as e:
        raise ValueError("; ".join(f"task.{line}" for line in validation_lines(e))) from None
    except TypeError:
        raise ValueError("task: give a mapping, e.g. {task: svamp, split: test}") from None
    k = settings.get("k", 10)
    if not isinstance(k, int):
        raise ValueError("k: give a whole number")
    return task, k, {key: v for key, v in settings.items() if key not in ("task", "limit", "k")}


class ReproduceRecipe(_Deferred):
    """The paper's table in one recipe: a corpus build, the teachers' replayed row, the base model few-shot, three
    students (CoT-, PoT-distilled, MD) with the same training settings, their single- and multi-path evals and the
    ensemble of the two single-mode students.

    `train` holds TrainRecipe fields shared by the three students; `eval` holds EvalRecipe fields shared by every
    eval, plus `task` (default svamp test), `limit` (first N problems; default all) and `k` (the multi-path k,
    default 10; every row is also evaluated greedily, k=1).
    """

    kind: Literal["reproduce"] = "reproduce"
    name: str
    student: ModelRef = Field(DEMO_STUDENT, validate_default=True, description="base model folder")
    corpus: RecipePath = Field(description="build recipe of the training corpus (built if not in the registry)")
    teacher_eval: RecipePath = Field(description="eval recipe of the teachers' own row (e.g. eval-published-svamp.yaml)")
    output_dir: RecipePath | None = Field(None, description="default: ${MIXDISTILL_HOME}/reproduce/<name>")
    train: dict = Field(default_factory=dict, description="TrainRecipe settings shared by the three students")
    eval: dict = Field(default_factory=dict, description="EvalRecipe settings shared by every eval, plus task, limit, k")

    @field_validator("train")
    @classmethod
    def _check_train_settings(cls, value: dict) -> dict:
        return _derived(TrainRecipe, value, _ROW_TRAIN_FIELDS,
                        {"name": "x", "student": "x", "corpus": {"parquet": "x"}, "output_dir": "x"})

    @field_validator("eval")
    @classmethod
    def _check_eval_settings(cls, value: dict) -> dict:
        task, k, shared = _eval_parts(value)
        if k < 2:
            raise ValueError("k: the multi-path k must be >= 2 (k=1, greedy, is always evaluated too)")
        for n in (1, k):
            _derived(EvalRecipe, {**shared, "k": n}, _ROW_EVAL_FIELDS,
                     {"name": "x", "model": "x", "tasks": [task.model_dump(exclude_defaults=True)]})
        return value

    @model_validator(mode="after")
    def _default_output(self) -> "ReproduceRecipe":
        if self.output_dir is None:
            self.output_dir = expand_path(f"${{{HOME_ENV}}}/reproduce/{self.name}")
        return self

    @property
    def task(self) -> TaskRef:
        """The one task split every row is evaluated on, with `eval.limit`."""
        return _eval_parts(self.eval)[0]

    @property
    def multi_k(self) -> int:
        return _eval_parts(self.eval)[1]

    @property
    def eval_settings(self) -> dict:
        """The EvalRecipe fields shared by every eval (without the reproduction's own task / limit / k)."""
        return _eval_parts(self.eval)[2]

    def preflight(self) -> list[str]:
        """What `reproduce` checks before anything runs: the base model folder exists."""
        if is_model_path(self.student) and not Path(self.student).exists():
            return [f"student: model folder {self.student} does not exist; `mixdistill fetch-demo-model` fetches "
                    "SmolLM2-135M-Instruct there (or set student: to a local model folder)"]
        return []


Recipe = BuildRecipe | TrainRecipe | EvalRecipe | ReproduceRecipe
R = TypeVar("R", BuildRecipe, TrainRecipe, EvalRecipe, ReproduceRecipe)
_KINDS: dict[str, type[BaseModel]] = {"build": BuildRecipe, "train": TrainRecipe, "eval": EvalRecipe,
                                      "reproduce": ReproduceRecipe}


def load_for_run(path: str | Path, expect: type[R]) -> R:
    """`load_recipe` plus the recipe's `preflight` checks: what a command that does the work needs before it starts."""
    spec = load_recipe(path, expect)
    problems = spec.preflight()
    if problems:
        raise RecipeError("\n".join(f"{path}: {line}" for line in problems))
    return spec


def load_recipe(path: str | Path, expect: type[R] | None = None) -> R:
    """Read and validate a recipe; every problem is reported, one line each, naming the file and the field.

    Relative paths inside the recipe are taken relative to the recipe file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping" + (" (the file is empty)" if data is None else ""))
    kind = data.get("kind", "build")  # train and eval recipes say so explicitly
    model = _KINDS.get(kind)
    if model is None:
        raise RecipeError(f"{path}: kind: unknown recipe kind {kind!r}; use one of {', '.join(_KINDS)}")
    if expect is not None and model is not expect:
        raise RecipeError(f"{path}: kind: this command needs a {expect.model_fields['kind'].default!r} recipe, not {kind!r}")
    try:
        return model.model_validate(data, context={"recipe_dir": path.resolve().parent})
    except ValidationError as e:
        raise RecipeError("\n".join(_lines(path, e))) from None


def _lines(path: Path, err: ValidationError) -> list[str]:
    return [f"{path}: {line}" for line in validation_lines(err)]


def validation_lines(err: ValidationError) -> list[str]:
    """One line per problem, `field.path: message`; never pydantic's documentation URL."""
    out = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}")
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (PyYAML keeps the last one without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)
