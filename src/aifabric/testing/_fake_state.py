"""The fake backend's mutable state behind one lock: switches, recorded requests, counters.

The server's event loop and the test's thread both touch it, so every read-modify-write (a switch
change, consuming one of `fail_first_n`) happens under the lock, and readers get copies.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aifabric.testing._fake_http import HttpRequest
from aifabric.testing._fake_switches import Switches, updated

__all__ = ["COUNTERS", "FakeState", "RecordedRequest"]

COUNTERS = ("requests", "connections", "injected_failures", "crashes")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake backend received it (control requests to /_fake are not recorded)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    json: Any  # the parsed body, or None when empty or not JSON
    body: bytes
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "json": self.json,
            "time": self.time,
        }


class FakeState:
    def __init__(self, initial: Switches) -> None:
        self.initial = initial
        self._switches = initial
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._inflight = 0
        self._ids = 0

    @property
    def switches(self) -> Switches:
        return self._switches  # one reference read: a consistent snapshot

    def update(self, changes: Mapping[str, Any]) -> tuple[Switches, Switches]:
        with self._lock:
            old = self._switches
            self._switches = new = updated(old, changes)
        return old, new

    def reset(self) -> tuple[Switches, Switches]:
        with self._lock:
            old = self._switches
            self._switches = self.initial
            self._requests.clear()
            self._counters = dict.fromkeys(COUNTERS, 0)
        return old, self.initial

    def record(self, request: HttpRequest) -> None:
        try:
            parsed = json.loads(request.body) if request.body else None
        except ValueError:
            parsed = None
        entry = RecordedRequest(
            request.method,
            request.path,
            request.query,
            dict(request.headers),
            parsed,
            request.body,
            time.time(),
        )
        with self._arrived:
            self._requests.append(entry)
            self._counters["requests"] += 1
            self._arrived.notify_all()

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, path: str | None, timeout: float) -> list[RecordedRequest]:
        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if path is None or r.path == path]

        with self._arrived:
            if not self._arrived.wait_for(lambda: len(matching()) >= n, timeout):
                where = f" to {path}" if path else ""
                raise TimeoutError(f"{len(matching())} of {n} requests{where} arrived within {timeout} s")
            return matching()

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {**self._counters, "inflight": self._inflight}

    def bump(self, counter: str) -> None:
        with self._lock:
            self._counters[counter] += 1

    def next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def take_failure(self) -> int | None:
        """The status to fail this request with, if any; consumes one of `fail_first_n`."""
        with self._lock:
            sw = self._switches
            if sw.status_override is not None:
                status = sw.status_override
            elif sw.fail_first_n > 0:
                self._switches = dataclasses.replace(sw, fail_first_n=sw.fail_first_n - 1)
                status = sw.fail_status
            else:
                return None
            self._counters["injected_failures"] += 1
            return status

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Count an inference request as in flight (the live value of the load gauges)."""
        with self._lock:
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
