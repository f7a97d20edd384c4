"""State in this process's memory: the reference store.

A gateway alone (the default, `state: memory` with one worker) shares nothing and runs no sync at all,
so it pays nothing for this. The store exists for several gateways inside one process (embedding, and
the tests' in-process replicas) and as the executable statement of the contract the other stores keep:
the lease expires `ttl` seconds after its last renewal, health publishes are fenced by the lease, the
later ejection wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from aifabric.state.base import Ejection, HealthSnapshot, StateStore

__all__ = ["MemoryStore"]


class MemoryStore(StateStore):
    kind = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._holder: str | None = None
        self._lease_until = 0.0
        self._version = 0
        self._health: HealthSnapshot | None = None
        self._ejections: dict[str, Ejection] = {}
        self._stops: dict[str, tuple[str, float]] = {}
        self._config: str | None = None
        self._members: dict[str, tuple[float, str]] = {}

    def _current_holder(self) -> str | None:
        if self._holder is not None and self._clock() >= self._lease_until:
            self._holder = None
        return self._holder

    async def try_lead(self, holder: str, ttl: float) -> bool:
        current = self._current_holder()
        if current is not None and current != holder:
            return False
        self._holder = holder
        self._lease_until = self._clock() + ttl
        return True

    async def resign(self, holder: str) -> None:
        if self._current_holder() == holder:
            self._holder = None

    async def publish_health(self, holder: str, backends: Mapping[str, dict[str, Any]], now: float) -> bool:
        if self._current_holder() != holder:
            return False
        self._version += 1
        self._health = HealthSnapshot(str(self._version), now, holder, dict(backends))
        return True

    async def read_health(self) -> HealthSnapshot | None:
        return self._health

    async def publish_ejection(self, target: str, until: float, count: int) -> None:
        current = self._ejections.get(target)
        if current is None or until > current.until:
            self._ejections[target] = Ejection(until, count)

    async def read_ejections(self, now: float) -> dict[str, Ejection]:
        for key in [k for k, e in self._ejections.items() if e.until <= now]:
            del self._ejections[key]
        return dict(self._ejections)

    async def publish_stop(self, backend: str, why: str, until: float) -> None:
        self._stops[backend] = (why, until)

    async def clear_stop(self, backend: str) -> None:
        self._stops.pop(backend, None)

    async def read_stops(self, now: float) -> dict[str, str]:
        return {name: why for name, (why, until) in self._stops.items() if until > now}

    async def publish_config(self, announcement: str) -> None:
        self._config = announcement

    async def read_config(self) -> str | None:
        return self._config

    async def publish_member(self, holder: str, record: str, now: float) -> None:
        self._members[holder] = (now, record)

    async def read_members(self, since: float) -> dict[str, str]:
        return {h: record for h, (seen, record) in self._members.items() if seen >= since}

    async def leave(self, holder: str) -> None:
        self._members.pop(holder, None)

    async def close(self) -> None:
        """Nothing to release: the store lives as long as the gateways that share it."""
