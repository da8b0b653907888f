"""OpenAI Chat Completions (with `n>1` sampling and the Batch API) and any OpenAI-compatible server by base URL.

Requests go through the SDK's client (auth, error classes, connection pool) but are sent and read raw, for two
reasons: a body that is not valid JSON must be stored with its text and an error status (never dropped), and skipping
the SDK's per-call validation keeps the client cheap at hundreds of requests per second. The SDK's own retries are off: `Teacher.complete` owns retries.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import openai

from mixdistill.teachers.base import (
    BatchStatus,
    Teacher,
    TeacherRequest,
    TeacherResult,
    Verdict,
    split_evenly,
)

BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_MAX_REQUESTS = 50_000
FATAL_400_CODES = {"unsupported_parameter", "unsupported_value", "model_not_found", "invalid_api_key"}


def _sample_seed(chunk: list[TeacherRequest]) -> int | None:
    # the same seed on every sample would make them identical: offset it by the (first) sample index
    seed = chunk[0].sampling.seed
    return None if seed is None else seed + chunk[0].sample_index


class OpenAITeacher(Teacher):
    provider = "openai"
    default_key_env = "OPENAI_API_KEY"
    needs_key = True
    supports_batch = True
    max_tokens_field = "max_completion_tokens"

    def __init__(self, spec, prices=None):
        super().__init__(spec, prices)
        self._client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        """Made on first use, inside the event loop that uses it; aiohttp transport (the SDK's faster option)."""
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                api_key=self._key or "unused",
                base_url=self.spec.base_url,
                max_retries=0,
                timeout=self.spec.timeout_s,
                http_client=openai.DefaultAioHttpClient(timeout=self.spec.timeout_s),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ------------------------------------------------------------------ grouping and classification
    def chunks(self, requests: list[TeacherRequest]) -> list[list[TeacherRequest]]:
        """Samples of the same prompt share one call with `n` choices (up to `n_per_call`)."""
        if self.spec.n_per_call <= 1:
            return [[r] for r in requests]
        groups: dict[tuple, list[TeacherRequest]] = defaultdict(list)
        for r in requests:
            groups[(r.problem_id, r.prompt.prompt_id, r.mode)].append(r)
        out = []
        for group in groups.values():
            group.sort(key=lambda r: r.sample_index)
            out += [group[i : i + self.spec.n_per_call] for i in range(0, len(group), self.spec.n_per_call)]
        return out

    def classify(self, exc: BaseException) -> Verdict:
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)):
            return "fatal"
        if isinstance(exc, openai.BadRequestError) and getattr(exc, "code", None) in FATAL_400_CODES:
            return "fatal"  # e.g. a reasoning model refusing `temperature`: every request would fail the same way
        if isinstance(exc, (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)):
            return "retry"
        if isinstance(exc, openai.APIStatusError) and exc.status_code in (408, 409):
            return "retry"
        return "fail"

    # ------------------------------------------------------------------ one call
    def body(self, chunk: list[TeacherRequest]) -> dict:
        first = chunk[0]
        s = first.sampling
        body = {
            "model": self.spec.model,
            "messages": first.messages,
            "temperature": s.temperature,
            "top_p": s.top_p,
            self.max_tokens_field: s.max_tokens,
        }
        if len(chunk) > 1:
            body["n"] = len(chunk)
        seed = _sample_seed(chunk)
        if seed is not None:
            body["seed"] = seed
        return body

    async def _call(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        started = time.perf_counter()
        # `post` is the SDK's documented route for raw requests: same auth, errors and transport, but the body is sent
        # as built here (the typed `create` re-validates every message, ~5 ms per call with a few-shot prompt)
        text = await self.client.post("/chat/completions", body=self.body(chunk), cast_to=str)
        return self.parse(chunk, text, time.perf_counter() - started)

    def parse(self, chunk: list[TeacherRequest], text: str, latency: float, batch_id: str | None = None) -> list[TeacherResult]:
        """A chat.completion body -> one result per request; a body that cannot be read becomes error rows."""
        try:
            data = json.loads(text)
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            usage = data.get("usage") or {}
            if len(choices) < len(chunk):
                raise ValueError(f"{len(choices)} choices for {len(chunk)} requested samples")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            error = self.scrub(f"unparseable response: {type(e).__name__}: {e}")
            return [
                TeacherResult(r.request_key, "error", text=self.scrub(text), error=error, latency_s=latency, batch_id=batch_id)
                for r in chunk
            ]
        prompt = split_evenly(usage.get("prompt_tokens"), len(chunk))
        completion = split_evenly(usage.get("completion_tokens"), len(chunk))
        out = []
        for i, (r, choice) in enumerate(zip(chunk, choices)):
            content = (choice.get("message") or {}).get("content")
            out.append(
                TeacherResult(
                    r.request_key,
                    "ok" if isinstance(content, str) else "error",
                    text=content,
                    finish_reason=choice.get("finish_reason"),
                    error=None if isinstance(content, str) else "response has no message content",
                    prompt_tokens=prompt[i],
                    completion_tokens=completion[i],
                    cost_usd=self.cost(prompt[i], completion[i], batch=batch_id is not None),
                    latency_s=latency,
                    batch_id=batch_id,
                )
            )
        return out

    # ------------------------------------------------------------------ Batch API
    async def submit_batch(self, requests: list[TeacherRequest]) -> str:
        lines = [
            json.dumps({"custom_id": r.request_key, "method": "POST", "url": BATCH_ENDPOINT, "body": self.body([r])})
            for r in requests
        ]
        upload = await self.client.files.create(file=("requests.jsonl", "\n".join(lines).encode()), purpose="batch")
        batch = await self.client.batches.create(
            input_file_id=upload.id, endpoint=BATCH_ENDPOINT, completion_window="24h",
            metadata={"source": "mixdistill"},
        )
        return batch.id

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        b = await self.client.batches.retrieve(batch_id)
        counts = b.request_counts.model_dump() if b.request_counts else {}
        state = "ended" if b.status in ("completed", "failed", "expired", "cancelled") else "pending"
        return BatchStatus(state, b.status, counts)

    async def fetch_batch(self, batch_id: str, by_key: dict[str, TeacherRequest]) -> list[TeacherResult]:
        """Results for the requests the batch answered; requests it did not answer are left for the next run."""
        b = await self.client.batches.retrieve(batch_id)
        out = []
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            content = await self.client.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    out += self._batch_line(line, by_key, batch_id)
        return out

    def _batch_line(self, line: str, by_key: dict[str, TeacherRequest], batch_id: str) -> list[TeacherResult]:
        try:
            item = json.loads(line)
            key = item["custom_id"]
        except (ValueError, KeyError, TypeError):
            return []  # a line without a readable id cannot be matched to a request; the request is retried next run
        request = by_key.get(key)
        if request is None:
            return []
        response = item.get("response") or {}
        if item.get("error") or response.get("status_code", 200) >= 400:
            error = item.get("error") or response.get("body", {}).get("error") or response
            return [TeacherResult(key, "error", error=self.scrub(f"batch item failed: {json.dumps(error)}"), batch_id=batch_id)]
        return self.parse([request], json.dumps(response.get("body")), latency=0.0, batch_id=batch_id)


class OpenAICompatibleTeacher(OpenAITeacher):
    """vLLM, llama.cpp server, Ollama, `transformers serve`...: the same wire protocol at `base_url`.

    Such servers usually need no key (one is sent if `api_key_env` is set), take `max_tokens`, and often ignore
    `n`, so samples are sent one per call unless `n_per_call` says otherwise.
    """

    provider = "openai-compatible"
    default_key_env = None
    needs_key = False
    supports_batch = False
    max_tokens_field = "max_tokens"

    def check(self) -> None:
        self.needs_key = bool(self.spec.api_key_env)
        super().check()

    def chunks(self, requests: list[TeacherRequest]) -> list[list[TeacherRequest]]:
        if "n_per_call" not in self.spec.model_fields_set:
            return [[r] for r in requests]
        return super().chunks(requests)
