"""From the fabric file's `state` (and the worker count) to the store and sync task a gateway runs.

    state: memory, one worker       nothing is shared: no store, no sync task, the checker runs alone
    state: memory, --workers N      the workers of this port share a private directory (LocalStore)
    state: redis://HOST:6379/0      replicas share Redis (RedisStore); also unix:///path.sock, rediss://

aifabric's own options ride in the URL's query and are taken out before Redis sees it:
`prefix` (key prefix, default `aifabric:`) and `interval` (the sync round, default 1s; the lease lasts
three rounds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aifabric.config.durations import parse_duration
from aifabric.config.schema import FabricConfig
from aifabric.core import Transition
from aifabric.errors import StateStoreError
from aifabric.state.base import StateStore
from aifabric.state.local import LocalStore, default_state_dir
from aifabric.state.redis import DEFAULT_PREFIX, RedisStore, require_redis, split_state_url
from aifabric.state.responses import (
    FileResponseStore,
    MemoryResponseStore,
    RedisResponseStore,
    ResponseStore,
)
from aifabric.state.sync import DEFAULT_INTERVAL, StateSync

if TYPE_CHECKING:
    from aifabric.health.checker import HealthChecker
    from aifabric.routing.table import RoutingTable

__all__ = ["check_state", "open_response_store", "open_store", "open_sync"]


def _options(config: FabricConfig) -> tuple[str, str, float]:
    url, ours = split_state_url(config.state)
    prefix = ours.get("prefix", DEFAULT_PREFIX)
    try:
        interval = parse_duration(ours["interval"]) if "interval" in ours else DEFAULT_INTERVAL
    except ValueError as exc:
        raise StateStoreError(f"state: the interval in the URL is not a duration: {exc}") from exc
    if interval <= 0:
        raise StateStoreError("state: the interval in the URL must be more than 0s")
    return url, prefix, interval


def check_state(config: FabricConfig) -> None:
    """Fail early (before workers fork) when the configured store cannot be used at all."""
    if config.state != "memory":
        require_redis()
        _options(config)


def open_store(config: FabricConfig, *, port: int) -> tuple[StateStore, float] | None:
    """The store this gateway shares state through and the sync interval, or None when it shares
    nothing. Call it in the process that will use it (after any fork)."""
    if config.state == "memory":
        if config.gateway.workers <= 1:
            return None
        return LocalStore(default_state_dir(port)), DEFAULT_INTERVAL
    url, prefix, interval = _options(config)
    return RedisStore(url, prefix=prefix), interval


def open_sync(
    config: FabricConfig,
    checker: HealthChecker,
    table: Callable[[], RoutingTable],
    *,
    port: int,
    clock: Callable[[], float] = time.monotonic,
    on_transition: Callable[[Transition], None] | None = None,
) -> StateSync | None:
    """The sync task to run beside the gateway instead of the bare health checker, or None."""
    opened = open_store(config, port=port)
    if opened is None:
        return None
    store, interval = opened
    return StateSync(store, checker, table, interval=interval, clock=clock, on_transition=on_transition)


def open_response_store(config: FabricConfig, *, port: int = 0) -> ResponseStore:
    """Where `previous_response_id` finds past responses: Redis when the state is shared through it
    (every replica continues every conversation), files beside the workers' state for
    `--workers N`, else this process's memory."""
    ttl, max_bytes = config.gateway.responses_ttl, config.gateway.responses_max_bytes
    if config.state == "memory":
        if config.gateway.workers > 1 and port:
            return FileResponseStore(default_state_dir(port) / "responses", ttl=ttl, max_bytes=max_bytes)
        return MemoryResponseStore(ttl=ttl, max_bytes=max_bytes)
    url, prefix, _ = _options(config)
    return RedisResponseStore(url, prefix=prefix, ttl=ttl)
