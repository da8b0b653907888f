"""OpenAI Chat Completions (with `n>1` sampling and the Batch API) or the Responses API, and any OpenAI-compatible
server by base URL or a fleet of them.

Reasoning models (o-series, gpt-5) get `reasoning_effort` (Responses API: `reasoning: {effort, summary}`),
`max_completion_tokens` / `max_output_tokens`, and no temperature, top_p or seed, which they reject.
`usage.completion_tokens_details.reasoning_tokens` is kept; reasoning tokens are part of the completion tokens and
priced as output. OpenAI-compatible servers: `reasoning_content` (vLLM, SGLang reasoning parsers; `reasoning` in newer
vLLM) is the trace, else `<think>` blocks are split out of the text.

Generation requests are sent and read raw through `teachers.http` (one aiohttp session), for two reasons: a body
that is not valid JSON must be stored with its text and an error status (never dropped), and the SDK's per-request
machinery costs about 1 ms of CPU per request. The SDK client serves the Batch API (files, batches) and is imported
only then (importing it takes a second of a cold start); its own retries are off: `Teacher.complete` owns retries.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Container

import orjson

from mixdistill.teachers.base import (
    BatchStatus,
    Teacher,
    TeacherRequest,
    TeacherResult,
    Verdict,
    split_evenly,
)
from mixdistill.teachers.fleet import Endpoint, Fleet
from mixdistill.teachers.http import HTTPStatusError, Transport, connection_error, dumps, transport_verdict

if TYPE_CHECKING:
    import openai
from mixdistill.teachers.reasoning import openai_reasoning_model, split_think

BATCH_ENDPOINTS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}
REASONING_UNSENT = ("temperature", "top_p", "seed")
BATCH_MAX_REQUESTS = 50_000
FATAL_400_CODES = frozenset({"unsupported_parameter", "unsupported_value", "model_not_found", "invalid_api_key"})


def _sample_seed(chunk: list[TeacherRequest]) -> int | None:
    # the same seed on every sample would make them identical: offset it by the (first) sample index
    seed = chunk[0].sampling.seed
    return None if seed is None else seed + chunk[0].sample_index


class OpenAITeacher(Teacher):
    provider = "openai"
    uses_http = True
    default_key_env = "OPENAI_API_KEY"
    needs_key = True
    supports_batch = True
    max_tokens_field = "max_completion_tokens"

    def __init__(self, spec, prices=None):
        super().__init__(spec, prices)
        self._client: openai.AsyncOpenAI | None = None
        self._transport: Transport | None = None

    def _new_transport(self, base_url: str | None) -> Transport:
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"  # as the SDK resolves it
        auth = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        return Transport(url, auth, self.spec.timeout_s, self.spec.max_concurrency)

    def _new_client(self, base_url: str | None) -> openai.AsyncOpenAI:
        """Made on first use, inside the event loop that uses it; aiohttp transport (the SDK's faster option)."""
        import openai

        return openai.AsyncOpenAI(
            api_key=self._key or "unused",
            base_url=base_url,
            max_retries=0,
            timeout=self.spec.timeout_s,
            http_client=openai.DefaultAioHttpClient(timeout=self.spec.timeout_s),
        )

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = self._new_client(self.spec.base_url)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    # ------------------------------------------------------------------ reasoning
    @property
    def reasoning_model(self) -> bool:
        return openai_reasoning_model(self.spec.model)

    def unsent_sampling(self) -> tuple[str, ...]:
        return REASONING_UNSENT if self.reasoning_model else ()

    def check_sampling(self, sampling) -> None:
        r = self.spec.reasoning
        if r is None:
            return
        if not self.reasoning_model:
            self.refuse(f"model {self.spec.model!r} is not an OpenAI reasoning model (o1, o3, o4-mini, gpt-5...); "
                        "remove reasoning or pick a reasoning model")
        if r.budget_tokens is not None:
            self.refuse("OpenAI reasoning models take reasoning.effort (low|medium|high), not budget_tokens; "
                        "replace budget_tokens with effort")

    # ------------------------------------------------------------------ grouping and classification
    def chunks(self, requests: list[TeacherRequest]) -> list[list[TeacherRequest]]:
        """Samples of the same prompt share one call with `n` choices (up to `n_per_call`; the Responses API has no `n`)."""
        if self.spec.n_per_call <= 1 or self.spec.api == "responses":
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
        verdict = transport_verdict(exc, FATAL_400_CODES)
        if verdict is not None:
            return verdict
        openai = sys.modules.get("openai")  # SDK errors exist only once the SDK was imported (Batch API, evaluation)
        if openai is None:
            return "fail"
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
        """The request as sent; it carries exactly the settings `request_params` records."""
        if self.spec.api == "responses":
            return self.responses_body(chunk[0])
        return {"model": self.spec.model, "messages": chunk[0].messages, **self._chat_settings(chunk)}

    def body_json(self, chunk: list[TeacherRequest]) -> bytes:
        """`body(chunk)` encoded. The messages' JSON comes from the prompt (`Prompt.chat_json`), whose few-shot part
        is encoded once: encoding the whole ~2 KB body was about a seventh of the client's CPU per request."""
        if self.spec.api == "responses":
            return dumps(self.body(chunk))
        first = chunk[0]
        settings = dumps({"model": self.spec.model, **self._chat_settings(chunk)})
        return b'{"messages":' + first.prompt.chat_json(first.question) + b"," + settings[1:]

    def _chat_settings(self, chunk: list[TeacherRequest]) -> dict:
        """Everything of a Chat Completions body but its messages."""
        first = chunk[0]
        s = first.sampling
        body = {self.max_tokens_field: s.max_tokens}
        if not self.unsent_sampling():
            body["temperature"] = s.temperature
            body["top_p"] = s.top_p
            seed = _sample_seed(chunk)
            if seed is not None:
                body["seed"] = seed
        if self.spec.reasoning is not None and self.spec.reasoning.effort is not None:
            body["reasoning_effort"] = self.spec.reasoning.effort
        if len(chunk) > 1:
            body["n"] = len(chunk)
        return body

    def responses_body(self, r: TeacherRequest) -> dict:
        s = r.sampling
        messages = r.messages
        body = {"model": self.spec.model, "instructions": messages[0]["content"], "input": messages[1:],
                "max_output_tokens": s.max_tokens, "store": False}
        if self.reasoning_model:
            effort = self.spec.reasoning.effort if self.spec.reasoning is not None else None
            body["reasoning"] = {"summary": "auto", **({"effort": effort} if effort else {})}
        else:
            body["temperature"] = s.temperature
            body["top_p"] = s.top_p
        return body

    async def _post(self, path: str, body: dict | bytes) -> str:
        if self._transport is None:
            self._transport = self._new_transport(self.spec.base_url)
        return await self._transport.post(path, body)

    async def _call(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        started = time.perf_counter()
        if self.spec.api == "responses":
            text = await self._post("/responses", self.body(chunk))
            return [self.parse_response(chunk[0].request_key, text, time.perf_counter() - started)]
        text = await self._post("/chat/completions", self.body_json(chunk))
        return self.parse([r.request_key for r in chunk], text, time.perf_counter() - started)

    def _unreadable(self, keys: list[str], text, e: Exception, latency: float, batch_id: str | None) -> list[TeacherResult]:
        error = self.scrub(f"unparseable response: {type(e).__name__}: {e}")
        return [
            TeacherResult(key, "error", text=self.scrub(text), error=error, latency_s=latency, batch_id=batch_id)
            for key in keys
        ]

    def split_reasoning(self, message: dict, content: str) -> tuple[str | None, str]:
        """(trace, final answer) of one chat message; OpenAI's own API returns no trace in Chat Completions."""
        return None, content

    def parse(self, keys: list[str], text: str, latency: float, batch_id: str | None = None) -> list[TeacherResult]:
        """A chat.completion body -> one result per request key (its samples, in order); a body that cannot be read
        becomes error rows."""
        try:
            data = orjson.loads(text)  # a third of the json module's CPU per response
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            usage = data.get("usage") or {}
            details = usage.get("completion_tokens_details") or {}
            if len(choices) < len(keys):
                raise ValueError(f"{len(choices)} choices for {len(keys)} requested samples")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return self._unreadable(keys, text, e, latency, batch_id)
        prompt = split_evenly(usage.get("prompt_tokens"), len(keys))
        completion = split_evenly(usage.get("completion_tokens"), len(keys))
        reasoning = split_evenly(details.get("reasoning_tokens"), len(keys))
        out = []
        for i, (key, choice) in enumerate(zip(keys, choices)):
            message = choice.get("message") or {}
            content = message.get("content")
            trace = None
            if isinstance(content, str):
                trace, content = self.split_reasoning(message, content)
            out.append(
                TeacherResult(
                    key,
                    "ok" if isinstance(content, str) else "error",
                    text=content,
                    finish_reason=choice.get("finish_reason"),
                    error=None if isinstance(content, str) else "response has no message content",
                    prompt_tokens=prompt[i],
                    completion_tokens=completion[i],
                    cost_usd=self.cost(prompt[i], completion[i], batch=batch_id is not None),
                    latency_s=latency,
                    batch_id=batch_id,
                    reasoning_text=trace,
                    reasoning_tokens=reasoning[i],
                )
            )
        return out

    def parse_response(self, key: str, text: str, latency: float, batch_id: str | None = None) -> TeacherResult:
        """A Responses API `response` body: reasoning summaries are the trace, `output_text` parts the answer."""
        try:
            data = json.loads(text)
            traces, parts = [], []
            for item in data["output"]:
                if item.get("type") == "reasoning":
                    traces += [s["text"] for s in item.get("summary") or [] if s.get("type") == "summary_text"]
                elif item.get("type") == "message":
                    parts += [c["text"] for c in item.get("content") or [] if c.get("type") == "output_text"]
            usage = data.get("usage") or {}
            reasoning_tokens = (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
            incomplete = (data.get("incomplete_details") or {}).get("reason")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return self._unreadable([key], text, e, latency, batch_id)[0]
        finish = "length" if incomplete == "max_output_tokens" else incomplete or data.get("status")
        pt, ct = usage.get("input_tokens"), usage.get("output_tokens")
        return TeacherResult(
            key, "ok", text="".join(parts), finish_reason=finish, prompt_tokens=pt, completion_tokens=ct,
            cost_usd=self.cost(pt, ct, batch=batch_id is not None), latency_s=latency, batch_id=batch_id,
            reasoning_text="\n\n".join(traces) or None, reasoning_tokens=reasoning_tokens,
        )

    # ------------------------------------------------------------------ Batch API
    async def submit_batch(self, requests: list[TeacherRequest]) -> str:
        endpoint = BATCH_ENDPOINTS[self.spec.api]
        lines = [
            json.dumps({"custom_id": r.request_key, "method": "POST", "url": endpoint, "body": self.body([r])})
            for r in requests
        ]
        upload = await self.client.files.create(file=("requests.jsonl", "\n".join(lines).encode()), purpose="batch")
        batch = await self.client.batches.create(
            input_file_id=upload.id, endpoint=endpoint, completion_window="24h",
            metadata={"source": "mixdistill"},
        )
        return batch.id

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        b = await self.client.batches.retrieve(batch_id)
        counts = b.request_counts.model_dump() if b.request_counts else {}
        state = "ended" if b.status in ("completed", "failed", "expired", "cancelled") else "pending"
        return BatchStatus(state, b.status, counts)

    async def fetch_batch(self, batch_id: str, keys: Container[str]) -> list[TeacherResult]:
        """Results for those of `keys` the batch answered; requests it did not answer are left for the next run."""
        b = await self.client.batches.retrieve(batch_id)
        out = []
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            content = await self.client.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    out += self._batch_line(line, keys, batch_id)
        return out

    def _batch_line(self, line: str, keys: Container[str], batch_id: str) -> list[TeacherResult]:
        try:
            item = json.loads(line)
            key = item["custom_id"]
        except (ValueError, KeyError, TypeError):
            return []  # a line without a readable id cannot be matched to a request; the request is retried next run
        if key not in keys:
            return []
        response = item.get("response") or {}
        if item.get("error") or response.get("status_code", 200) >= 400:
            error = item.get("error") or response.get("body", {}).get("error") or response
            return [TeacherResult(key, "error", error=self.scrub(f"batch item failed: {json.dumps(error)}"), batch_id=batch_id)]
        body = json.dumps(response.get("body"))
        if self.spec.api == "responses":
            return [self.parse_response(key, body, latency=0.0, batch_id=batch_id)]
        return self.parse([key], body, latency=0.0, batch_id=batch_id)


class OpenAICompatibleTeacher(OpenAITeacher):
    """vLLM, SGLang, llama.cpp server, Ollama, `transformers serve`...: the same wire protocol at `base_url`, or at
    each of `base_urls` (a fleet of servers of one model: fewest in flight first, a failing server rested).

    Such servers usually need no key (one is sent if `api_key_env` is set), take `max_tokens`, and often ignore
    `n`, so samples are sent one per call unless `n_per_call` says otherwise. Open models take sampling parameters
    even when they reason; `reasoning.effort` is sent as `reasoning_effort` (gpt-oss and servers that map it).
    """

    provider = "openai-compatible"
    default_key_env = None
    needs_key = False
    supports_batch = False
    max_tokens_field = "max_tokens"

    def __init__(self, spec, prices=None):
        super().__init__(spec, prices)
        self._fleet: Fleet[Transport] | None = None

    def check(self) -> None:
        self.needs_key = bool(self.spec.api_key_env)
        super().check()

    def chunks(self, requests: list[TeacherRequest]) -> list[list[TeacherRequest]]:
        if "n_per_call" not in self.spec.model_fields_set:
            return [[r] for r in requests]
        return super().chunks(requests)

    @property
    def reasoning_model(self) -> bool:
        return False  # served open models take their sampling parameters, whatever they are called

    def check_sampling(self, sampling) -> None:
        r = self.spec.reasoning
        if r is not None and r.budget_tokens is not None:
            self.refuse("OpenAI-compatible servers have no standard thinking-budget field; use reasoning.effort "
                        "(sent as reasoning_effort) or remove budget_tokens")

    def split_reasoning(self, message: dict, content: str) -> tuple[str | None, str]:
        trace = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(trace, str) and trace:
            return trace, content
        return split_think(content)

    @property
    def fleet(self) -> Fleet[Transport]:
        if self._fleet is None:
            urls = self.spec.base_urls or [self.spec.base_url]
            self._fleet = Fleet([Endpoint(url, self._new_transport(url)) for url in urls])
        return self._fleet

    async def _post(self, path: str, body: dict | bytes) -> str:
        if self.spec.base_urls is None:
            return await super()._post(path, body)
        fleet = self.fleet
        endpoint = fleet.pick()
        endpoint.in_flight += 1
        try:
            text = await endpoint.client.post(path, body)
        except Exception as e:
            if connection_error(e) or (isinstance(e, HTTPStatusError) and e.status_code >= 500):
                fleet.failed(endpoint)  # the retry policy sends the request again, to the fleet's pick then
            raise
        finally:
            endpoint.in_flight -= 1
        fleet.ok(endpoint)
        return text

    async def aclose(self) -> None:
        await super().aclose()
        if self._fleet is not None:
            for e in self._fleet.endpoints:
                await e.client.close()
            self._fleet = None
