"""A loopback server speaking the OpenAI wire protocol: Chat Completions (with `n`), the Responses API, Files and
Batches; and the reasoning dialects of OpenAI-compatible servers.

Reasoning models (o-series, gpt-5: `reasoning_model`) refuse temperature/top_p/seed with a 400 as the real API does,
and report `completion_tokens_details.reasoning_tokens` (part of `completion_tokens`) by effort. `reasoning_format`
makes it a vLLM/SGLang server with a reasoning parser (`"reasoning_content"`, or `"reasoning"` as newer vLLM names it)
or a model that writes its trace in `<think>` tags (`"think"`).

    with fake_openai(responder=my_fn, latency=0.2) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test")

Faults: `srv.inject("429", retry_after=0.1)`, "500", "malformed", "drop", "timeout", "401", for the next request(s).
Run as a script it serves the echo responder until killed (used by `mixdistill bench teachers`):
`python tests/fakes/openai_server.py --latency 0.2` prints the port on its first line; each line `window` sent to
its stdin is answered with one JSON line: the generation requests since the previous `window`, when the first of them
was received and when the last was answered (`time.time()`), so a client can tell its time outside the requests.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from aiohttp import web

try:
    from fakes.loopback import FakeRequest, LoopbackServer, text_content
except ImportError:  # run as a script from tests/fakes
    from loopback import FakeRequest, LoopbackServer, text_content  # type: ignore[no-redef]

REASONING_TOKENS = {"low": 16, "medium": 64, "high": 256}  # by effort; medium when none is given
_REASONING_MODEL = re.compile(r"^(?:o\d|gpt-5)")


def reasoning_model(model: str) -> bool:
    return bool(_REASONING_MODEL.match(model))


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                429: "rate_limit_exceeded", 500: "server_error"}


@dataclass
class FakeOpenAI(LoopbackServer):
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict] = field(default_factory=dict)
    reasoning_format: str | None = None  # None (OpenAI) | "reasoning_content" | "reasoning" | "think"
    generation_path = ("/chat/completions", "/responses")

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches/{batch_id}", self.get_batch)

    def error(self, status: int, message: str, headers: dict | None = None, code: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    def auth_error(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if given != self.api_key:
            return self.error(401, f"Incorrect API key provided: {given}.", code="invalid_api_key")
        return None

    def settings_error(self, body: dict) -> web.Response | None:
        if self.reasoning_format is None and reasoning_model(body.get("model", "")):
            for name in ("temperature", "top_p", "seed"):
                if name in body:
                    return self.error(400, f"Unsupported parameter: '{name}' is not supported with this model.",
                                      code="unsupported_parameter")
        elif "reasoning_effort" in body or "reasoning" in body:
            if self.reasoning_format is None:
                return self.error(400, "Unrecognized request argument supplied: reasoning_effort",
                                  code="unsupported_parameter")
        return None

    def _reasoning_tokens(self, body: dict) -> int:
        effort = body.get("reasoning_effort") or (body.get("reasoning") or {}).get("effort") or "medium"
        return REASONING_TOKENS[effort] if reasoning_model(body["model"]) else 0

    # ------------------------------------------------------------------ chat completions
    def completion(self, body: dict) -> dict:
        """The chat.completion object for one request body (also used for batch lines)."""
        messages = [{"role": m["role"], "content": text_content(m.get("content"))} for m in body["messages"]]
        n = int(body.get("n") or 1)
        asked = [FakeRequest(body["model"], messages, body, sample=i) for i in range(n)]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        choices, traced = [], 0
        for i, req in enumerate(asked):
            text = self.responder(req)
            words = text.split(" ")
            finish = "stop"
            if limit is not None and len(words) > limit:
                text, finish = " ".join(words[:limit]), "length"
            message = {"role": "assistant", "content": text, "refusal": None}
            if self.reasoning_format in ("reasoning_content", "reasoning"):
                message[self.reasoning_format] = self.trace(req)
                traced += self.count_tokens(message[self.reasoning_format])
            elif self.reasoning_format == "think":
                message["content"] = f"<think>\n{self.trace(req)}\n</think>\n\n{text}"
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
        prompt_tokens = sum(self.count_tokens(m["content"]) for m in messages)
        reasoning_tokens = self._reasoning_tokens(body) * n + traced
        completion_tokens = sum(self.count_tokens(c["message"]["content"]) for c in choices) + reasoning_tokens
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return {
            "id": self.new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": choices, "system_fingerprint": "fp_fake", "usage": usage,
        }

    # ------------------------------------------------------------------ responses
    def response(self, body: dict) -> dict:
        """A Responses API `response`: a reasoning item with a summary (reasoning models), then the message."""
        system = body.get("instructions")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": m["role"], "content": text_content(m.get("content"))} for m in body["input"]
        ]
        req = FakeRequest(body["model"], messages, body)
        text, output, status, incomplete = self.responder(req), [], "completed", None
        limit = body.get("max_output_tokens")
        if limit is not None and len(text.split(" ")) > limit:
            text, status, incomplete = " ".join(text.split(" ")[:limit]), "incomplete", {"reason": "max_output_tokens"}
        reasoning_tokens = self._reasoning_tokens(body)
        if reasoning_model(body["model"]):
            summary = [{"type": "summary_text", "text": self.trace(req)}] if (body.get("reasoning") or {}).get("summary") else []
            output.append({"id": self.new_id("rs_"), "type": "reasoning", "summary": summary})
        output.append({"id": self.new_id("msg_"), "type": "message", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
        input_tokens = sum(self.count_tokens(m["content"]) for m in messages)
        output_tokens = self.count_tokens(text) + reasoning_tokens
        return {
            "id": self.new_id("resp_"), "object": "response", "created_at": int(time.time()), "model": body["model"],
            "status": status, "incomplete_details": incomplete, "output": output,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                      "total_tokens": input_tokens + output_tokens},
        }

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self.answer(request, self.response)

    def model_error(self, model: str) -> web.Response | None:
        if self.models is not None and model not in self.models:
            return self.error(404, f"The model `{model}` does not exist or you do not have access to it.",
                              code="model_not_found")
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self.answer(request, self.completion)

    # ------------------------------------------------------------------ files and batches
    async def upload(self, request: web.Request) -> web.Response:
        if (failed := self.auth_error(request)) is not None:
            return failed
        form = await request.post()
        data = form["file"].file.read()
        file_id = self.new_id("file-")
        self.files[file_id] = data
        self.seen(request, {"purpose": form.get("purpose"), "bytes": len(data)})
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": form["file"].filename, "purpose": form.get("purpose"), "status": "processed"})

    async def file_content(self, request: web.Request) -> web.Response:
        self.seen(request, None)
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return self.error(404, "No such file")
        return web.Response(body=data, content_type="application/octet-stream")

    async def create_batch(self, request: web.Request) -> web.Response:
        if (failed := self.auth_error(request)) is not None:
            return failed
        body = await request.json()
        self.seen(request, body)
        if body["input_file_id"] not in self.files:
            return self.error(400, "input file not found")
        batch_id = self.new_id("batch_")
        lines = [ln for ln in self.files[body["input_file_id"]].decode().splitlines() if ln.strip()]
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
            "status": "in_progress", "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
            "_ends": time.time() + self.batch_delay,
        }
        return web.json_response(self._public(self.batches[batch_id]))

    async def get_batch(self, request: web.Request) -> web.Response:
        self.seen(request, None)
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self.error(404, "No such batch")
        if batch["status"] == "in_progress" and time.time() >= batch["_ends"]:
            self._run_batch(batch)
        return web.json_response(self._public(batch))

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _run_batch(self, batch: dict) -> None:
        out, errors = [], []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if self.models is not None and item["body"]["model"] not in self.models:
                errors.append({"id": self.new_id("batch_req_"), "custom_id": item["custom_id"], "response": None,
                               "error": {"code": "model_not_found", "message": "no such model"}})
                continue
            answer = self.response if item["url"].endswith("/responses") else self.completion
            out.append({"id": self.new_id("batch_req_"), "custom_id": item["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": "req", "body": answer(item["body"])}})
        for name, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = self.new_id("file-")
                self.files[file_id] = "\n".join(json.dumps(r) for r in rows).encode()
                batch[name] = file_id
        batch["status"] = "completed"
        batch["request_counts"].update(completed=len(out), failed=len(errors))


def fake_openai(**kwargs) -> FakeOpenAI:
    """`with fake_openai(responder=..., latency=0.2) as srv: srv.base_url, srv.requests_seen`"""
    return FakeOpenAI(**kwargs)


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="fake OpenAI server (echo responder) on 127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    with fake_openai(latency=args.latency) as srv:
        print(srv.port, flush=True)
        counted = 0
        for line in sys.stdin:  # serve until the parent closes our stdin (or kills us)
            if line.strip() == "window":
                seen = srv.generation_requests[counted:]
                counted += len(seen)
                first = seen[0]["t"] if seen else None
                print(json.dumps({"requests": len(seen), "first_received": first, "last_answered": srv.last_answered}),
                      flush=True)
