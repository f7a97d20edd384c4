"""A backend's concurrency cap with a bounded queue in which `interactive` requests go before `batch`.

    backends.X.max_concurrency: N    at most N requests at X at once (none: no cap, no queue); each
                                     of W gateway processes gates N/W of them (gateway.forward)
    backends.X.max_queue: M          at most M more wait for a free place (default 100); beyond that,
                                     the request is not queued: it goes on to its next candidate
                                     (another target, a fallback role), or gets the 503/429 of none

`PriorityQueue` is the pure policy (order and bound); `BackendGate` puts asyncio futures in it. A
waiting request whose deadline passes, or whose client goes away, leaves the queue; a place handed
to a request that is cancelled at that very moment is passed on, never lost.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

from aifabric.errors import FabricError
from aifabric.tenancy.principal import Priority

__all__ = ["BackendGate", "PriorityQueue", "QueueFull"]

_T = TypeVar("_T")


class QueueFull(FabricError):
    """The backend's queue holds `max_queue` requests already (internal: the forwarder turns it into
    an `overloaded` attempt at once)."""


class PriorityQueue(Generic[_T]):
    """FIFO within a priority; every interactive item before any batch item; at most `bound` items."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._lanes: tuple[collections.deque[_T], ...] = tuple(collections.deque() for _ in Priority)

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes)

    def push(self, item: _T, priority: Priority) -> bool:
        """False (nothing queued) when the queue is full."""
        if len(self) >= self.bound:
            return False
        self._lanes[priority.rank].append(item)
        return True

    def pop(self) -> _T | None:
        for lane in self._lanes:
            if lane:
                return lane.popleft()
        return None

    def remove(self, item: _T) -> bool:
        for lane in self._lanes:
            try:
                lane.remove(item)
            except ValueError:
                continue
            return True
        return False

    def counts(self) -> dict[str, int]:
        return {p.value: len(self._lanes[p.rank]) for p in Priority}


class BackendGate:
    """Places at one backend: `await acquire(priority)` before sending, `release()` when done."""

    def __init__(self, capacity: int, queue: int = 100) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.waiting: PriorityQueue[asyncio.Future[None]] = PriorityQueue(queue)

    def resize(self, capacity: int, queue: int) -> None:
        """A reload changed the cap: requests in flight finish; the new cap holds from now on."""
        self.capacity = capacity
        self.waiting.bound = queue
        while self.in_use < self.capacity and self._hand_over():
            self.in_use += 1

    async def acquire(self, priority: Priority, timeout: float) -> None:
        """A place, now or when one frees up (interactive first). QueueFull when the queue is full;
        TimeoutError after `timeout` seconds in the queue."""
        if self.in_use < self.capacity and not len(self.waiting):
            self.in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.waiting.push(future, priority):
            raise QueueFull
        try:
            async with asyncio.timeout(timeout):
                await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # the place was handed over as we gave up: pass it on
            else:
                self.waiting.remove(future)
            raise

    def release(self) -> None:
        if self.in_use > self.capacity or not self._hand_over():
            self.in_use = max(0, self.in_use - 1)

    def _hand_over(self) -> bool:
        """Give a place to the first waiting request still waiting; False when none is."""
        while True:
            future = self.waiting.pop()
            if future is None:
                return False
            if not future.done():
                future.set_result(None)
                return True

    def view(self) -> dict[str, object]:
        return {"capacity": self.capacity, "in_use": self.in_use, "queued": self.waiting.counts()}
