"""The hot path of generation requests: one aiohttp session posting prebuilt JSON and returning the body text.

Profiling `bench teachers` showed the SDK's per-request machinery (httpx-style header and URL models, option deep
copies, pydantic request options) costing about 1 ms of CPU per request, four times the whole raw aiohttp client;
the requests themselves are plain JSON POSTs. So generation requests go through this session, and the SDK clients
stay for everything else (files, batches). Errors keep the SDK's vocabulary: `status_code`, `message`, `code` and
`response.headers` (for `retry-after`), so the backends classify them exactly as they classify the SDK's.
"""

from __future__ import annotations

import asyncio
import json
import sys

import orjson


def dumps(body: dict) -> bytes:
    """A request body as compact UTF-8 JSON (orjson: a tenth of the json module's CPU; it refuses integers beyond
    64 bits, which the json module still writes)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class HTTPStatusError(Exception):
    """A response with status >= 400; `message` and `code` read from the provider's error body when it has one."""

    def __init__(self, status: int, text: str, headers):
        self.status_code, self.text, self.headers = status, text, headers
        self.response = self  # `Teacher.retry_after` reads `exc.response.headers`, as for the SDK's errors
        self.message, self.code = text[:2000], None
        try:
            error = json.loads(text).get("error")
            if isinstance(error, dict):
                self.message = str(error.get("message") or self.message)
                self.code = error.get("code")
        except (ValueError, AttributeError):
            pass
        super().__init__(self.message)


class Transport:
    """Made on first use, inside the event loop that uses it (an aiohttp session belongs to one loop). aiohttp is
    imported then too (0.1 s, two SSL contexts built at import), so planning and replay-only runs never pay for it,
    and `generate` imports it while DuckDB opens the registry (`preload`)."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float, limit: int):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **headers}
        self.timeout_s = timeout_s
        self.limit = limit
        self._session = None

    async def post(self, path: str, body: dict | bytes) -> str:
        """POST a body (a dict, or JSON already encoded) and return the response text."""
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.limit),
            )
        async with self._session.post(self.base_url + path, data=body if isinstance(body, bytes) else dumps(body)) as response:
            text = await response.text()
            if response.status >= 400:
                raise HTTPStatusError(response.status, text, response.headers)
            return text

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def transport_verdict(exc: BaseException, fatal_400_codes: frozenset[str] = frozenset(), retry_statuses=(408, 409, 429)):
    """How `Teacher.classify` treats this transport's errors; None for an exception it did not raise."""
    if isinstance(exc, HTTPStatusError):
        status = exc.status_code
        if status in (401, 403, 404) or (status == 400 and exc.code in fatal_400_codes):
            return "fatal"
        return "retry" if status in retry_statuses or status >= 500 else "fail"
    if connection_error(exc):
        return "retry"
    return None


def connection_error(exc: BaseException) -> bool:
    """A connection refused, reset or dropped, or no answer within timeout_s. An aiohttp error can only come from a
    session, so aiohttp is loaded whenever there is one to match."""
    aiohttp = sys.modules.get("aiohttp")
    return isinstance(exc, asyncio.TimeoutError) or (aiohttp is not None and isinstance(exc, aiohttp.ClientError))
