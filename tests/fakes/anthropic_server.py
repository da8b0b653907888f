"""A loopback server speaking the Anthropic wire protocol: Messages and Message Batches.

    with fake_anthropic(responder=my_fn, latency=0.1) as srv:
        client = anthropic.AsyncAnthropic(base_url=srv.base_url, api_key="sk-ant-test")

Faults as for the OpenAI fake (`srv.inject("529")` gives Anthropic's "overloaded" too).
Thinking: `thinking: {type: enabled, budget_tokens}` (>= 1024, < max_tokens) or `{type: adaptive}` with
`output_config: {effort}` answer with a thinking block (and a redacted-thinking block with `redact=True`) before the
text, output tokens counting the thinking; a temperature other than 1 with thinking is a 400, as from the real API.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from aiohttp import web

from fakes.loopback import FakeRequest, LoopbackServer, text_content

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class FakeAnthropic(LoopbackServer):
    batches: dict[str, dict] = field(default_factory=dict)
    redact: bool = False  # add a redacted_thinking block to thinking answers
    generation_path = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.root

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/batches", self.create_batch)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.get_batch)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.results)

    def error(self, status: int, message: str, headers: dict | None = None, code: str | None = None) -> web.Response:
        body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
        return web.json_response(body, status=status, headers=headers)

    def auth_error(self, request: web.Request) -> web.Response | None:
        # SDKs send `x-api-key` (the documented header) or, in recent versions, `Authorization: Bearer`
        given = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and given != self.api_key:
            return self.error(401, f"invalid x-api-key: {given}")
        return None

    def model_error(self, model: str) -> web.Response | None:
        if self.models is not None and model not in self.models:
            return self.error(404, f"model: {model}")
        return None

    def settings_error(self, body: dict) -> web.Response | None:
        thinking = body.get("thinking")
        if not thinking:
            return None
        if thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024 or budget >= body["max_tokens"]:
                return self.error(400, "thinking.budget_tokens: must be >= 1024 and less than max_tokens")
        elif thinking.get("type") != "adaptive":
            return self.error(400, f"thinking.type: unknown {thinking.get('type')!r}")
        if body.get("temperature", 1) != 1:
            return self.error(400, "temperature may only be set to 1 when thinking is enabled")
        if "top_p" in body and body["top_p"] < 0.95:
            return self.error(400, "top_p must be >= 0.95 when thinking is enabled")
        return None

    def message(self, body: dict) -> dict:
        system = body.get("system")
        messages = ([{"role": "system", "content": text_content(system)}] if system else []) + [
            {"role": m["role"], "content": text_content(m["content"])} for m in body["messages"]
        ]
        req = FakeRequest(body["model"], messages, body)
        text = self.responder(req)
        words, stop = text.split(" "), "end_turn"
        if len(words) > body["max_tokens"]:
            text, stop = " ".join(words[: body["max_tokens"]]), "max_tokens"
        content, thought = [], 0
        if body.get("thinking"):
            trace = self.trace(req)
            content.append({"type": "thinking", "thinking": trace, "signature": "c2lnbmF0dXJl"})
            thought = self.count_tokens(trace)
            if self.redact:
                content.append({"type": "redacted_thinking", "data": "RU5DUllQVEVE"})
        content.append({"type": "text", "text": text})
        return {
            "id": self.new_id("msg_"), "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": sum(self.count_tokens(m["content"]) for m in messages),
                      "output_tokens": self.count_tokens(text) + thought},
        }

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self.answer(request, self.message)

    # ------------------------------------------------------------------ batches
    async def create_batch(self, request: web.Request) -> web.Response:
        if (failed := self.auth_error(request)) is not None:
            return failed
        body = await request.json()
        self.seen(request, body)
        batch_id = self.new_id("msgbatch_")
        now = time.time()
        self.batches[batch_id] = {"_requests": body["requests"], "_ends": now + self.batch_delay, "_results": None,
                                  "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                                  "created_at": _iso(now), "expires_at": _iso(now + 86400), "ended_at": None,
                                  "archived_at": None, "cancel_initiated_at": None, "results_url": None,
                                  "request_counts": {"processing": len(body["requests"]), "succeeded": 0,
                                                     "errored": 0, "canceled": 0, "expired": 0}}
        return web.json_response(self._public(self.batches[batch_id]))

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def get_batch(self, request: web.Request) -> web.Response:
        self.seen(request, None)
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self.error(404, "batch not found")
        if batch["processing_status"] == "in_progress" and time.time() >= batch["_ends"]:
            self._run_batch(batch)
        return web.json_response(self._public(batch))

    def _run_batch(self, batch: dict) -> None:
        results = []
        for item in batch["_requests"]:
            params = item["params"]
            if self.models is not None and params["model"] not in self.models:
                result = {"type": "errored", "error": {"type": "error", "error": {"type": "not_found_error",
                                                                                 "message": "no such model"}}}
            else:
                result = {"type": "succeeded", "message": self.message(params)}
            results.append({"custom_id": item["custom_id"], "result": result})
        succeeded = sum(r["result"]["type"] == "succeeded" for r in results)
        batch.update(_results=results, processing_status="ended", ended_at=_iso(time.time()),
                     results_url=f"{self.root}/v1/messages/batches/{batch['id']}/results")
        batch["request_counts"].update(processing=0, succeeded=succeeded, errored=len(results) - succeeded)

    async def results(self, request: web.Request) -> web.Response:
        self.seen(request, None)
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None or batch["_results"] is None:
            return self.error(404, "results not available")
        text = "\n".join(json.dumps(r) for r in batch["_results"])
        return web.Response(body=text.encode(), content_type="application/binary")


def fake_anthropic(**kwargs) -> FakeAnthropic:
    """`with fake_anthropic(responder=..., latency=0.2) as srv: srv.base_url, srv.requests_seen`"""
    return FakeAnthropic(**kwargs)
