"""Routing over a fleet of servers of one model: fewest requests in flight first, failing servers rested.

Written by hand because it is a dozen lines of bookkeeping beside the HTTP sessions: a load-balancer library
would add a process or a dependency for what one event loop can decide per request. Which server answered never
reaches a request key or the teacher's identity (a fleet serves one model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")
FAILS_TO_REST = 3  # consecutive failures that take a server out
REST_S = 2.0  # first rest; doubles each time the server fails again on its return, up to MAX_REST_S
MAX_REST_S = 60.0


@dataclass
class Endpoint(Generic[C]):
    url: str
    client: C
    in_flight: int = 0
    failures: int = 0  # consecutive
    rests: int = 0  # rests in a row (a success resets it)
    resting_until: float = 0.0
    answered: int = 0


class Fleet(Generic[C]):
    def __init__(self, endpoints: list[Endpoint[C]], clock=time.monotonic):
        self.endpoints = endpoints
        self.clock = clock

    def pick(self) -> Endpoint[C]:
        """The up server with the fewest in flight; when all rest, the one back soonest (it is tried again)."""
        now = self.clock()
        up = [e for e in self.endpoints if e.resting_until <= now]
        if not up:
            return min(self.endpoints, key=lambda e: e.resting_until)
        return min(up, key=lambda e: e.in_flight)

    def ok(self, e: Endpoint[C]) -> None:
        e.failures = e.rests = 0
        e.answered += 1

    def failed(self, e: Endpoint[C]) -> None:
        """A transport-level failure (connection refused or reset, 5xx): enough in a row rest the server."""
        e.failures += 1
        if e.failures >= FAILS_TO_REST:
            e.resting_until = self.clock() + min(REST_S * 2**e.rests, MAX_REST_S)
            e.rests += 1
            e.failures = 0
