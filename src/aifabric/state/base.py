"""The contract of a state store: what gateway workers and replicas share, and nothing more.

    probe lease   one holder at a time probes the backends; it renews the lease every sync round,
                  and when it stops renewing (crash, partition, shutdown) another takes over
    health        the lease holder publishes every backend's health; the others apply it
    ejections     a target ejected by real request failures on one gateway is ejected on all
    stops         a backend an operator stopped (drill, /admin/backends/NAME/stop) is down on every
                  gateway, whatever their probes see, until it is started again; the gateway that
                  stopped it renews the stop every round, so a stop whose gateway died lapses
    config        the latest config reload announced by one gateway (`aifabric config reload`): the
                  others notice a new announcement in their next round and reload their own file
    members       every live gateway, renewed every round, with what it did about the latest reload
                  (applied or refused, its files' version): `config reload` waits for all to answer

Every store keeps these six things and nothing of the hot path: the data plane never calls a store,
the `StateSync` task beside the health checker does, once a round. Times that cross process or machine
boundaries are wall-clock epoch seconds; each process converts them to its own monotonic clock.

Implementations: `MemoryStore` (one process, several gateways: the reference and the tests'
in-process replicas), `LocalStore` (the workers of `aifabric serve --workers N` on one machine: flock and
files), `RedisStore` (replicas on several machines).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Ejection", "HealthSnapshot", "StateStore"]


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What the lease holder published in one round."""

    version: str  # opaque: changes with every publish, so a reader applies each snapshot once
    published_at: float  # epoch seconds, for a reader to ignore data no live leader stands behind
    holder: str  # who published it (shown by status views)
    backends: dict[str, dict[str, Any]]  # backend name -> a record of `state.snapshot.health_record`


@dataclass(frozen=True, slots=True)
class Ejection:
    """One target's ejection, as shared: until when (epoch seconds) and the how-many-th in a row."""

    until: float
    count: int


class StateStore(abc.ABC):
    """Where gateways share their control-plane state. Every method may raise `StateStoreError` when
    the store cannot be reached; callers carry on with their own local state then."""

    #: a short name for logs and status: "memory", "local", "redis"
    kind: str = "abstract"

    @abc.abstractmethod
    async def try_lead(self, holder: str, ttl: float) -> bool:
        """Acquire the probe lease, or renew it if `holder` has it; True while `holder` holds it.
        A lease not renewed within `ttl` seconds may be taken by another holder."""

    @abc.abstractmethod
    async def resign(self, holder: str) -> None:
        """Give the lease up now if `holder` has it (a clean shutdown: no wait for the ttl)."""

    @abc.abstractmethod
    async def publish_health(self, holder: str, backends: Mapping[str, dict[str, Any]], now: float) -> bool:
        """Publish every backend's health; False (nothing written) when `holder` no longer holds the
        lease, so a leader that stalled past its ttl cannot overwrite its successor's data."""

    @abc.abstractmethod
    async def read_health(self) -> HealthSnapshot | None:
        """The latest published health, or None when nothing was published yet."""

    @abc.abstractmethod
    async def publish_ejection(self, target: str, until: float, count: int) -> None:
        """Share that `target` is ejected until `until` (epoch seconds). The later `until` wins when
        two gateways eject the same target."""

    @abc.abstractmethod
    async def read_ejections(self, now: float) -> dict[str, Ejection]:
        """Ejections still in force at `now` (epoch seconds), by target key."""

    @abc.abstractmethod
    async def publish_stop(self, backend: str, why: str, until: float) -> None:
        """Share that `backend` was stopped on purpose, with the reason to show, until `until` (epoch
        seconds) unless renewed; the latest publish wins."""

    @abc.abstractmethod
    async def clear_stop(self, backend: str) -> None:
        """The backend was started again: its stop no longer holds anywhere."""

    @abc.abstractmethod
    async def read_stops(self, now: float) -> dict[str, str]:
        """Stops in force at `now` (epoch seconds): backend -> the reason to show."""

    @abc.abstractmethod
    async def publish_config(self, announcement: str) -> None:
        """Announce a config reload (an opaque string, new for every reload); the latest one wins."""

    @abc.abstractmethod
    async def read_config(self) -> str | None:
        """The latest reload announcement, or None when none was made."""

    @abc.abstractmethod
    async def publish_member(self, holder: str, record: str, now: float) -> None:
        """Say that `holder` is alive at `now` (epoch seconds), with its record (an opaque string)."""

    @abc.abstractmethod
    async def read_members(self, since: float) -> dict[str, str]:
        """The records of the gateways that published since `since` (epoch seconds), by holder."""

    @abc.abstractmethod
    async def leave(self, holder: str) -> None:
        """`holder` stops (a clean shutdown): it is no longer a member."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and files (a held lease is released too)."""

    def describe(self) -> str:
        """Where the state lives, safe to log (no password)."""
        return self.kind
