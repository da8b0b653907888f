"""A loopback server speaking the OpenAI wire protocol: Chat Completions (with `n`), Files and Batches.

    with fake_openai(responder=my_fn, latency=0.2) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test")

Faults: `srv.inject("429", retry_after=0.1)`, "500", "malformed", "drop", "timeout", "401", for the next request(s).
Run as a script it serves the echo responder until killed (used by `mixdistill bench teachers`):
`python tests/fakes/openai_server.py --latency 0.2` prints the port on its first line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from aiohttp import web

try:
    from fakes.loopback import FakeRequest, LoopbackServer, text_content
except ImportError:  # run as a script from tests/fakes
    from loopback import FakeRequest, LoopbackServer, text_content  # type: ignore[no-redef]

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                429: "rate_limit_exceeded", 500: "server_error"}


@dataclass
class FakeOpenAI(LoopbackServer):
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict] = field(default_factory=dict)
    generation_path = "/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
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

    # ------------------------------------------------------------------ chat completions
    def completion(self, body: dict) -> dict:
        """The chat.completion object for one request body (also used for batch lines)."""
        messages = [{"role": m["role"], "content": text_content(m.get("content"))} for m in body["messages"]]
        n = int(body.get("n") or 1)
        texts = [self.responder(FakeRequest(body["model"], messages, body, sample=i)) for i in range(n)]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        choices = []
        for i, text in enumerate(texts):
            words = text.split(" ")
            finish = "stop"
            if limit is not None and len(words) > limit:
                text, finish = " ".join(words[:limit]), "length"
            choices.append({"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None, "finish_reason": finish})
        prompt_tokens = sum(self.count_tokens(m["content"]) for m in messages)
        completion_tokens = sum(self.count_tokens(c["message"]["content"]) for c in choices)
        return {
            "id": self.new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": choices, "system_fingerprint": "fp_fake",
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

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
            out.append({"id": self.new_id("batch_req_"), "custom_id": item["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": "req", "body": self.completion(item["body"])}})
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
        sys.stdin.read()  # serve until the parent closes our stdin (or kills us)
