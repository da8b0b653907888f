"""What the fake OpenAI and Anthropic servers share: an aiohttp app on 127.0.0.1 in its own thread, injectable
faults and latency, a record of the requests seen, and the responder hook that produces the answers.

A responder is any `Callable[[FakeRequest], str]`: the server wraps its text in the provider's response shape.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web


@dataclass
class FakeRequest:
    """A generation request as the responder sees it (provider-neutral)."""

    model: str
    messages: list[dict]  # {"role", "content": str}; a system prompt is the first message
    body: dict
    sample: int = 0  # choice index when n > 1

    @property
    def last_user(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


Responder = Callable[[FakeRequest], str]


def echo_responder(req: FakeRequest) -> str:
    """Default answer: a short CoT-style reply that names the sample, enough for protocol tests and benchmarks."""
    return f"Sample {req.sample}: the question has {len(req.last_user.split())} words. The answer is 42."


def echo_trace(req: FakeRequest) -> str:
    """Default reasoning trace: it names a wrong answer, so a test can tell whether the trace or the answer was judged."""
    return f"Let me think. The question has {len(req.last_user.split())} words; first guess: the answer is 7. No, recheck."


def text_content(content) -> str:
    """Chat message content as text: a string, or a list of typed parts."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


@dataclass
class Fault:
    kind: str  # an HTTP status ("429", "500", "529", "401", "400"...) or "malformed" | "drop" | "timeout"
    retry_after: float | None = None
    code: str | None = None  # the error's `code` field (OpenAI), e.g. "unsupported_value"


@dataclass
class LoopbackServer:
    """Base of both fakes. Use as a context manager; `base_url` is what the SDK client is given."""

    responder: Responder = echo_responder
    trace: Responder = echo_trace  # the reasoning trace of a reasoning request (thinking, reasoning summary, ...)
    latency: float = 0.0
    api_key: str | None = None  # when set, other keys get 401 (and the message echoes the key, as a worst case)
    models: set[str] | None = None  # when set, other models get 404 model-not-found
    batch_delay: float = 0.0  # seconds before a submitted batch ends
    requests_seen: list[dict] = field(default_factory=list)  # {"method", "path", "body"} per request, in order
    in_flight: int = 0
    last_answered: float = 0.0  # time.time() when the latest generation request was answered
    _faults: collections.deque = field(default_factory=collections.deque)
    _ids: itertools.count = field(default_factory=itertools.count)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self):
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        """Stop serving (a server that dies mid-build); idempotent."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        try:  # uvloop, when installed, makes the fake cheap enough not to be the bottleneck of a benchmark
            import uvloop

            self._loop = uvloop.new_event_loop()
        except ImportError:
            self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024**2)
        self.routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ faults
    def inject(self, kind: str, count: int = 1, retry_after: float | None = None, code: str | None = None) -> None:
        """The next `count` generation requests fail with `kind` (thread-safe; consumed in arrival order)."""
        for _ in range(count):
            self._faults.append(Fault(kind, retry_after, code))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def seen(self, request: web.Request, body) -> None:
        self.requests_seen.append({"method": request.method, "path": request.path, "body": body, "t": time.time()})

    @property
    def generation_requests(self) -> list[dict]:
        return [r for r in self.requests_seen if r["path"].endswith(self.generation_path)]

    generation_path = ""  # what `generation_requests` counts (a str.endswith suffix or tuple of them)

    async def apply_fault(self, request: web.Request) -> web.StreamResponse | None:
        """Serve the next injected fault, if any; None means answer normally."""
        try:
            fault = self._faults.popleft()
        except IndexError:
            return None
        if fault.kind == "drop":
            request.transport.abort()  # the client sees the connection reset mid-request
            raise asyncio.CancelledError
        if fault.kind == "timeout":
            await asyncio.sleep(3600)
        if fault.kind == "malformed":
            return web.Response(status=200, body=b'{"id": "broken", "choices": [{"index": 0, "mess', content_type="application/json")
        headers = {"retry-after": str(fault.retry_after)} if fault.retry_after is not None else {}
        return self.error(int(fault.kind), "injected fault", headers=headers, code=fault.code)

    def error(self, status: int, message: str, headers: dict | None = None, code: str | None = None) -> web.Response:
        raise NotImplementedError

    def auth_error(self, request: web.Request) -> web.Response | None:
        raise NotImplementedError

    def model_error(self, model: str) -> web.Response | None:
        raise NotImplementedError

    async def answer(self, request: web.Request, respond: Callable[[dict], dict]) -> web.StreamResponse:
        """One generation request, the same way for every provider: recorded, delayed by `latency`, then refused
        for a bad key, an injected fault, an unknown model or settings the model refuses, else answered with
        `respond(body)`. `in_flight` counts requests received and not yet answered."""
        body = await request.json()
        self.seen(request, body)
        self.in_flight += 1
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            failed = (self.auth_error(request) or await self.apply_fault(request) or self.model_error(body.get("model"))
                      or self.settings_error(body))
            return failed if failed is not None else web.json_response(respond(body))
        finally:
            self.in_flight -= 1
            self.last_answered = time.time()

    def settings_error(self, body: dict) -> web.Response | None:
        """A 400 for settings the real provider refuses (reasoning models and sampling parameters...)."""
        return None

    @staticmethod
    def count_tokens(text: str) -> int:
        return max(1, len(text.split()))
