"""The one async protocol every teacher backend implements, and the flow control they share.

A backend implements `_call` (one provider call for a chunk of requests) and says how to classify its exceptions.
`Teacher.complete` wraps `_call` with the rate limiter (RPM/TPM) and tenacity retries (exponential backoff with full
jitter, `retry-after` honoured), turns per-request failures into stored error rows, and raises `TeacherFatalError` on
errors no retry can fix (401/403/unknown model), so a build stops at once with one clear line.
"""

from __future__ import annotations

import asyncio
import hashlib
import email.utils
from json.encoder import encode_basestring
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, ClassVar, Literal

from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from mixdistill.errors import MixdistillError
from mixdistill.ids import canonical_json, content_hash
from mixdistill.prompts import Prompt
from mixdistill.recipe import Sampling, TeacherSpec
from mixdistill.teachers.prices import PriceTable

if TYPE_CHECKING:
    from mixdistill.tasks import Problem

Verdict = Literal["retry", "fatal", "fail"]
MAX_RETRY_AFTER_S = 600.0
MAX_ERROR_TEXT = 20_000


class TeacherError(MixdistillError):
    """A teacher cannot be used as configured (missing key, unknown model, bad replay file...)."""


class TeacherFatalError(TeacherError):
    """An error no retry can fix (bad key, no permission, unknown model): the build stops."""


@dataclass(frozen=True)
class TeacherRequest:
    """One sample to generate. `request_key` is its identity and its cache key (DESIGN.md)."""

    request_key: str
    problem_id: str
    question: str
    mode: str
    sample_index: int
    prompt: Prompt
    sampling: Sampling

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.prompt.chat(self.question)

    def est_tokens(self) -> int:
        """Rough upper estimate for the TPM limiter: ~4 characters per token, plus the full completion budget."""
        chars = len(self.prompt.system) + len(self.question) + sum(
            len(e.question) + len(e.rationale) for e in self.prompt.exemplars
        )
        return chars // 4 + self.sampling.max_tokens


@dataclass
class TeacherResult:
    request_key: str
    status: str  # 'ok' | 'error'
    text: str | None = None  # the final answer (what verification judges)
    finish_reason: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
    batch_id: str | None = None
    reasoning_text: str | None = None  # the reasoning trace, apart from the answer
    reasoning_tokens: int | None = None  # part of completion_tokens (billed as output), when the provider says


def request_key(
    *, provider: str, model: str, prompt_id: str, problem_id: str, mode: str, sampling: dict, sample_index: int
) -> str:
    return content_hash(
        {
            "provider": provider,
            "model": model,
            "prompt_id": prompt_id,
            "problem_id": problem_id,
            "mode": mode,
            "sampling": sampling,
            "sample_index": sample_index,
        }
    )


def request_keyer(*, provider: str, model: str, prompt_id: str, mode: str, sampling: dict):
    """`request_key` with everything but the problem and the sample index fixed, as a function of those two: the
    canonical JSON around them is built once, so a plan of ten million keys hashes ten million strings and
    serialises nothing (the keys are `request_key`'s, byte for byte)."""
    template = canonical_json({"provider": provider, "model": model, "prompt_id": prompt_id,
                               "problem_id": "\x00problem\x00", "mode": mode, "sampling": sampling,
                               "sample_index": "\x00sample\x00"})
    head, rest = template.split('"\\u0000problem\\u0000"')
    middle, tail = rest.split('"\\u0000sample\\u0000"')

    def key(problem_id: str, sample_index: int) -> str:
        text = f"{head}{encode_basestring(problem_id)}{middle}{int(sample_index)}{tail}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    return key


def teacher_id(spec: TeacherSpec) -> str:
    """Provider, model and server; a fleet's is the same whichever servers it lists (they serve one model), and
    reasoning settings enter only when set, so the ids of teachers without them are what they always were."""
    ident = {"provider": spec.provider, "model": spec.model, "base_url": spec.base_url}
    if spec.reasoning is not None:
        ident["reasoning"] = spec.reasoning.model_dump(exclude_none=True)
    return content_hash(ident)


def split_evenly(total: int | None, parts: int) -> list[int | None]:
    """Share one call's token count among its `parts` rows so that the stored rows sum to the true total."""
    if total is None:
        return [None] * parts
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms`, or `retry-after` (seconds or an HTTP date); None when absent or unreadable."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return min(float(ms) / 1000, MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(parsed.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)


def _per_minute(limit: int | None) -> AsyncLimiter | None:
    """A leaky bucket for a per-minute limit that refills every second (or every 60/limit s for tiny limits), so
    the start of a build sends at most a second's share at once instead of a whole minute's worth."""
    if not limit:
        return None
    period = max(1.0, 60.0 / limit)
    return AsyncLimiter(limit * period / 60.0, period)


class Teacher:
    """Base class of all backends. Subclasses set `provider`, `default_key_env` and implement `_call`."""

    provider: ClassVar[str]
    default_key_env: ClassVar[str | None] = None
    needs_key: ClassVar[bool] = False
    supports_batch: ClassVar[bool] = False
    uses_http: ClassVar[bool] = False  # requests go through `teachers.http` (aiohttp)

    def __init__(self, spec: TeacherSpec, prices: PriceTable | None = None):
        self.spec = spec
        self.teacher_id = teacher_id(spec)
        self.prices = (prices or PriceTable()).for_teacher(spec)
        self._key: str | None = None
        self._rpm = _per_minute(spec.requests_per_minute)
        self._tpm = _per_minute(spec.tokens_per_minute)

    # ------------------------------------------------------------------ setup
    @property
    def key_env(self) -> str | None:
        return self.spec.api_key_env or self.default_key_env

    def check(self) -> None:
        """Run before any request: the key must be present (read from the environment, kept only in memory)."""
        env = self.key_env
        key = os.environ.get(env, "").strip() if env else ""
        if self.needs_key and not key:
            raise TeacherError(f"teacher {self.spec.label!r}: no API key; set the environment variable {env}")
        self._key = key or None

    @property
    def workers(self) -> int:
        """How many calls may be in flight at once."""
        return self.spec.max_concurrency

    def chunks(self, requests: list[TeacherRequest]) -> list[list[TeacherRequest]]:
        """How requests are grouped into calls; one request per call unless the backend can do better."""
        return [[r] for r in requests]

    def check_sampling(self, sampling: Sampling) -> None:
        """Refuse settings the provider would silently change (the request key must describe what was sent),
        and reasoning settings the model family cannot take; one line saying what to change."""
        if self.spec.reasoning is not None:
            self.refuse(f"provider {self.provider!r} takes no reasoning settings; remove reasoning")

    def refuse(self, why: str) -> None:
        raise TeacherError(f"teacher {self.spec.label!r}: {why}")

    def request_params(self, sampling: Sampling) -> dict:
        """The settings that shape an answer, as the request key and `generations.params` record them. Without
        reasoning settings this is the recipe's sampling unchanged, so request keys stored before reasoning
        teachers existed stay valid; sampling parameters a family does not take are left out (never sent)."""
        params = sampling.model_dump()
        for name in self.unsent_sampling():
            params.pop(name, None)
        if self.spec.reasoning is not None:
            params["reasoning"] = self.spec.reasoning.model_dump(exclude_none=True)
        if self.spec.api != "chat":
            params["api"] = self.spec.api
        return params

    def unsent_sampling(self) -> tuple[str, ...]:
        """Sampling parameters this model refuses (reasoning models): they are not sent and not in the key."""
        return ()

    def serves(self, mode: str) -> bool:
        """False for a mode this teacher has no answers for at all (a replay of PoT programs asked for CoT)."""
        return True

    def answerable(self, requests: list[TeacherRequest]) -> list[TeacherRequest]:
        """Those of a chunk of requests this teacher can answer at all (replay: those with a recording); the rest are
        never sent. Called once per chunk, right before the chunk is sent."""
        return requests

    def plan_chunk(self, problems: list[Problem], samples: dict[str, int]) -> None:
        """Sees each chunk of the problems the plan asks of this teacher, and the samples per mode it asks, while the
        plan is made (before any write), for `check_coverage`."""

    def check_coverage(self) -> None:
        """Refuse before any write when the plan's requests cannot be served (replay of another task's outputs)."""

    def settings(self) -> dict:
        """What the registry's `teachers.settings` keeps: the spec without anything secret (keys never are in it)."""
        return self.spec.model_dump(mode="json", exclude={"name"})

    async def aclose(self) -> None:
        return None

    # ------------------------------------------------------------------ errors
    def scrub(self, text: str) -> str:
        """Remove the key from any text that may leave this object (messages echoed by a server included)."""
        text = str(text)
        if self._key:
            text = text.replace(self._key, "***")
        return text[:MAX_ERROR_TEXT]

    def classify(self, exc: BaseException) -> Verdict:
        return "fail"

    def retry_after(self, exc: BaseException) -> float | None:
        response = getattr(exc, "response", None)
        return parse_retry_after(getattr(response, "headers", None))

    def describe(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)
        prefix = f"HTTP {status}: " if status else ""
        return self.scrub(f"{type(exc).__name__}: {prefix}{getattr(exc, 'message', None) or exc}")

    def fatal_message(self, exc: BaseException) -> str:
        hint = f"; check ${self.key_env}" if getattr(exc, "status_code", None) in (401, 403) and self.key_env else ""
        return f"teacher {self.spec.label!r} (model {self.spec.model!r}): {self.describe(exc)}{hint}"

    # ------------------------------------------------------------------ calling
    async def _call(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        raise NotImplementedError

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None, batch: bool = False) -> float | None:
        return self.prices.cost(prompt_tokens, completion_tokens, batch=batch)

    def retrying(self, attempts: int | None = None, done: int = 0) -> AsyncRetrying:
        """tenacity policy: retry transient errors with full-jitter exponential backoff, or as `retry-after` says.
        `attempts` (default: 1 + max_retries) after `done` attempts already made (the backoff continues from there)."""

        def wait(state) -> float:
            exc = state.outcome.exception()
            after = self.retry_after(exc) if exc is not None else None
            return after if after is not None else self._jitter(SimpleNamespace(attempt_number=state.attempt_number + done))

        return AsyncRetrying(
            stop=stop_after_attempt(self.spec.max_retries + 1 if attempts is None else attempts),
            wait=wait,
            retry=retry_if_exception(lambda e: self.classify(e) == "retry"),
            reraise=True,
        )

    async def with_retries(self, fn, *args):
        """Await `fn(*args)` under the retry policy; fatal errors become `TeacherFatalError` (key scrubbed).

        The first attempt runs outside tenacity (whose per-call setup was a tenth of a millisecond of CPU per request
        in `bench teachers`); a retryable failure waits as the policy says and hands over to it for the rest."""
        try:
            try:
                return await fn(*args)
            except Exception as exc:
                if self.spec.max_retries == 0 or self.classify(exc) != "retry":
                    raise
                after = self.retry_after(exc)
                await asyncio.sleep(after if after is not None else self._jitter(SimpleNamespace(attempt_number=1)))
            async for attempt in self.retrying(self.spec.max_retries, done=1):
                with attempt:
                    return await fn(*args)
        except Exception as exc:
            if self.classify(exc) == "fatal":
                raise TeacherFatalError(self.fatal_message(exc)) from None
            raise

    async def complete(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        """One call with flow control; a request that still fails after retries becomes an error row."""

        async def attempt() -> list[TeacherResult]:
            await self._throttle(chunk)
            return await self._call(chunk)

        started = time.perf_counter()
        try:
            return await self.with_retries(attempt)
        except TeacherFatalError:
            raise
        except Exception as exc:
            error, latency = self.describe(exc), time.perf_counter() - started
            return [TeacherResult(r.request_key, "error", error=error, latency_s=latency) for r in chunk]

    @property
    def _jitter(self) -> wait_random_exponential:
        return wait_random_exponential(multiplier=self.spec.retry_backoff_s, max=60)

    async def _throttle(self, chunk: list[TeacherRequest]) -> None:
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None:
            need = sum(r.est_tokens() for r in chunk[:1]) + sum(r.sampling.max_tokens for r in chunk[1:])
            await self._tpm.acquire(min(need, self._tpm.max_rate))  # a call larger than the bucket waits for a full one


@dataclass
class BatchStatus:
    """What a provider says about a submitted batch."""

    state: Literal["pending", "ended"]
    detail: str = ""
    counts: dict = field(default_factory=dict)
