"""Anthropic Messages (one sample per call: the API has no `n`) and Message Batches.

Reasoning: `budget_tokens` becomes extended thinking (`thinking: {type: enabled, budget_tokens}`), `effort` adaptive
thinking (`thinking: {type: adaptive}` with `output_config: {effort}`), as the model family takes them
(`reasoning.anthropic_thinking`). With thinking on, temperature is fixed at 1 and top_p is not sent. Thinking blocks
are the trace; redacted-thinking blocks are kept in it, marked, as the opaque data they are.

Messages go through `teachers.http` like the OpenAI backend's (raw JSON, cheap per request); the SDK serves Message
Batches and is imported only then.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Container

from mixdistill.teachers.base import BatchStatus, Teacher, TeacherRequest, TeacherResult, Verdict
from mixdistill.teachers.http import Transport, transport_verdict
from mixdistill.teachers.reasoning import anthropic_thinking

if TYPE_CHECKING:
    import anthropic

API_VERSION = "2023-06-01"

MIN_THINKING_BUDGET = 1024


class AnthropicTeacher(Teacher):
    provider = "anthropic"
    uses_http = True
    default_key_env = "ANTHROPIC_API_KEY"
    needs_key = True
    supports_batch = True

    def __init__(self, spec, prices=None):
        super().__init__(spec, prices)
        self._client: anthropic.AsyncAnthropic | None = None
        self._transport: Transport | None = None

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        """Made on first use, inside the event loop that uses it; aiohttp transport (the SDK's faster option)."""
        if self._client is None:
            import anthropic

            self._client = anthropic.AsyncAnthropic(
                api_key=self._key, base_url=self.spec.base_url, max_retries=0, timeout=self.spec.timeout_s,
                http_client=anthropic.DefaultAioHttpClient(timeout=self.spec.timeout_s),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    def classify(self, exc: BaseException) -> Verdict:
        verdict = transport_verdict(exc, retry_statuses=(408, 409, 429, 529))
        if verdict is not None:
            return verdict
        anthropic = sys.modules.get("anthropic")  # SDK errors exist only once the SDK was imported (Message Batches)
        if anthropic is None:
            return "fail"
        if isinstance(exc, (anthropic.AuthenticationError, anthropic.PermissionDeniedError, anthropic.NotFoundError)):
            return "fatal"
        if isinstance(exc, (anthropic.RateLimitError, anthropic.InternalServerError, anthropic.APIConnectionError)):
            return "retry"
        if isinstance(exc, anthropic.APIStatusError) and exc.status_code in (408, 409, 529):
            return "retry"
        return "fail"

    def unsent_sampling(self) -> tuple[str, ...]:
        return ("temperature", "top_p") if self.spec.reasoning is not None else ()

    def check_sampling(self, sampling) -> None:
        r, model = self.spec.reasoning, self.spec.model
        if r is None:
            if sampling.temperature > 1:
                self.refuse(f"sampling.temperature {sampling.temperature} is above Anthropic's maximum of 1")
            return
        takes = anthropic_thinking(model)
        if takes == "none":
            self.refuse(f"model {model!r} has no extended thinking (Claude 3.7 Sonnet and later); remove reasoning")
        if r.budget_tokens is not None:
            if takes == "effort":
                self.refuse(f"model {model!r} takes adaptive thinking only; replace reasoning.budget_tokens with effort")
            if r.budget_tokens < MIN_THINKING_BUDGET:
                self.refuse(f"reasoning.budget_tokens {r.budget_tokens} is below Anthropic's minimum of {MIN_THINKING_BUDGET}")
            if r.budget_tokens >= sampling.max_tokens:
                self.refuse(f"reasoning.budget_tokens {r.budget_tokens} must be below sampling.max_tokens "
                            f"{sampling.max_tokens} (the budget is part of it); raise max_tokens or lower the budget")
        if r.effort is not None and takes == "budget":
            self.refuse(f"model {model!r} takes reasoning.budget_tokens, not effort (adaptive thinking needs Claude 4.6 "
                        "or later); replace effort with budget_tokens")

    def params(self, r: TeacherRequest) -> dict:
        messages = r.messages
        s = r.sampling
        params = {
            "model": self.spec.model,
            "system": messages[0]["content"],
            "messages": messages[1:],
            "max_tokens": s.max_tokens,
        }
        reasoning = self.spec.reasoning
        if reasoning is None:
            params["temperature"] = s.temperature
            if s.top_p < 1.0:  # recent models refuse temperature and top_p together; send top_p only when it matters
                params["top_p"] = s.top_p
            return params
        if reasoning.budget_tokens is not None:
            params["thinking"] = {"type": "enabled", "budget_tokens": reasoning.budget_tokens}
        else:
            params["thinking"] = {"type": "adaptive"}
        if reasoning.effort is not None:
            params["output_config"] = {"effort": reasoning.effort}
        return params

    async def _call(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        (r,) = chunk
        started = time.perf_counter()
        # raw like the OpenAI backend: unparseable bodies are stored, and the SDK's per-call machinery is skipped
        if self._transport is None:
            url = self.spec.base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
            headers = {"x-api-key": self._key or "", "anthropic-version": API_VERSION}
            self._transport = Transport(url, headers, self.spec.timeout_s, self.spec.max_concurrency)
        text = await self._transport.post("/v1/messages", self.params(r))
        return [self.parse(r.request_key, text, time.perf_counter() - started)]

    def parse(self, key: str, text: str, latency: float, batch_id: str | None = None) -> TeacherResult:
        try:
            data = json.loads(text) if isinstance(text, str) else text
            content = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
            trace = "\n\n".join(
                b.get("thinking", "") if b.get("type") == "thinking" else f"<redacted_thinking>{b.get('data', '')}</redacted_thinking>"
                for b in data["content"] if b.get("type") in ("thinking", "redacted_thinking")
            )
            usage = data.get("usage") or {}
            stop = data.get("stop_reason")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return TeacherResult(
                key, "error", text=self.scrub(str(text)), latency_s=latency, batch_id=batch_id,
                error=self.scrub(f"unparseable response: {type(e).__name__}: {e}"),
            )
        pt, ct = usage.get("input_tokens"), usage.get("output_tokens")
        return TeacherResult(
            key, "ok", text=content, finish_reason=stop, prompt_tokens=pt, completion_tokens=ct,
            cost_usd=self.cost(pt, ct, batch=batch_id is not None), latency_s=latency, batch_id=batch_id,
            reasoning_text=trace or None,  # output_tokens include thinking; the API reports no separate count
        )

    # ------------------------------------------------------------------ Message Batches
    async def submit_batch(self, requests: list[TeacherRequest]) -> str:
        batch = await self.client.messages.batches.create(
            requests=[{"custom_id": r.request_key, "params": self.params(r)} for r in requests]
        )
        return batch.id

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        b = await self.client.messages.batches.retrieve(batch_id)
        counts = b.request_counts.model_dump() if b.request_counts else {}
        return BatchStatus("ended" if b.processing_status == "ended" else "pending", b.processing_status, counts)

    async def fetch_batch(self, batch_id: str, keys: Container[str]) -> list[TeacherResult]:
        """Succeeded and errored items of `keys` are stored; canceled/expired ones are left for the next run."""
        out = []
        async for item in await self.client.messages.batches.results(batch_id):
            key = item.custom_id
            if key not in keys:
                continue
            if item.result.type == "succeeded":
                out.append(self.parse(key, item.result.message.model_dump(mode="json"), 0.0, batch_id))
            elif item.result.type == "errored":
                error = self.scrub(f"batch item failed: {item.result.error.model_dump_json()}")
                out.append(TeacherResult(key, "error", error=error, batch_id=batch_id))
        return out
