"""Active health checks: every backend probed the way its kind wants, each on its own schedule.

The checker owns one `BackendHealth` per backend (shared with the routing table, which reads it
without locks) and is the only writer of it. Each backend has its own probe loop, so a backend that
hangs until its timeout never delays the probes of the others; clouds are probed sparingly (their
adapter's `min_probe_interval`). Every probe also compares the model ids the backend serves with
the ids the roles send it (model-id drift), and a changed mismatch is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from aifabric.backends.base import ProbeHttp, adapter_for, unix_routes
from aifabric.config.schema import BackendConfig, FabricConfig
from aifabric.core import BackendHealth, BackendState, FailureClass, ProbeResult, Transition
from aifabric.errors import OutOfResources
from aifabric.http.client import UpstreamClient

__all__ = ["HealthChecker", "configured_models", "probe_backends", "probe_interval"]

log = logging.getLogger("aifabric.health")

TransitionHook = Callable[[Transition], None]
# Called with (backend name, new mismatch messages) when a backend's mismatches change.
DriftHook = Callable[[str, list[str]], None]


def configured_models(config: FabricConfig, backend: str) -> list[str]:
    """The model ids the roles send to one backend, in config order."""
    ids: dict[str, None] = {}
    for role in config.roles.values():
        for target in role.targets:
            if target.backend == backend:
                ids[target.model] = None
    return list(ids)


def probe_interval(backend: BackendConfig) -> float:
    """Seconds between two probes of a backend (at least its kind's minimum, e.g. 5 min for clouds)."""
    return max(backend.health.interval, adapter_for(backend.kind).min_probe_interval)


class HealthChecker:
    def __init__(
        self,
        config: FabricConfig,
        http: ProbeHttp,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionHook | None = None,
        on_drift: DriftHook | None = None,
    ) -> None:
        self.config = config
        self.http = http
        self.clock = clock
        self.on_transition = on_transition
        self.on_drift = on_drift
        self.healths: dict[str, BackendHealth] = {}
        self._changed = asyncio.Event()
        self.update_config(config)

    # -- configuration ---------------------------------------------------------------------------

    def update_config(self, config: FabricConfig) -> None:
        """Follow a reloaded config: keep the health of backends that stay (same objects, so the
        routing table's references stay valid), add new ones, drop removed ones."""
        self.config = config
        for name, backend in config.backends.items():
            health = self.healths.get(name)
            if health is None:
                health = self.healths[name] = BackendHealth(name)
            host = config.hosts.get(backend.host) if backend.host else None
            health.always_on = host.always_on if host is not None else True
            health.healthy_threshold = max(1, backend.health.healthy_threshold)
            health.unhealthy_threshold = max(1, backend.health.unhealthy_threshold)
        for name in list(self.healths):
            if name not in config.backends:
                del self.healths[name]
        self._changed.set()

    # -- probing ---------------------------------------------------------------------------------

    async def probe_one(self, name: str) -> BackendHealth:
        """Probe one backend now and fold the result into its health."""
        backend = self.config.backends[name]
        adapter = adapter_for(backend.kind)
        try:
            result = await adapter.probe(self.http, backend, backend.health.timeout)
        except asyncio.CancelledError:
            raise
        except OutOfResources:
            # The gateway could not open a socket: that says nothing of the backend; its health stays.
            return self.healths[name]
        except Exception as exc:  # a bug in a probe must not stop health checking
            log.exception("probe of backend %s crashed", name)
            result = ProbeResult(
                False,
                BackendState.DOWN,
                f"probe crashed: {type(exc).__name__}: {exc}",
                0.0,
                failure=FailureClass.UPSTREAM_5XX,
            )
        health = self.healths.get(name)
        if health is None:  # removed by a reload while the probe was in flight
            return BackendHealth(name)
        transition = health.apply_probe(result, self.clock())
        self._check_drift(backend, health)
        if transition is not None:
            self._report(transition)
        return health

    async def probe_all(self, names: Iterable[str] | None = None) -> dict[str, BackendHealth]:
        """Probe every backend (or the named ones) concurrently."""
        wanted = list(names) if names is not None else list(self.config.backends)
        await asyncio.gather(*(self.probe_one(n) for n in wanted))
        return {n: self.healths[n] for n in wanted if n in self.healths}

    def _check_drift(self, backend: BackendConfig, health: BackendHealth) -> None:
        adapter = adapter_for(backend.kind)
        configured = configured_models(self.config, backend.name)
        mismatches = adapter.check_models(configured, health.served_models, backend.name)
        if mismatches == health.mismatches:
            return
        if self.on_drift is not None:
            self.on_drift(backend.name, mismatches)
        else:
            for message in mismatches:
                if message not in health.mismatches:
                    log.warning("model id drift: %s", message)
            if not mismatches:
                log.info("backend %s: model ids match the config again", backend.name)
        health.mismatches = mismatches

    def _report(self, transition: Transition) -> None:
        if self.on_transition is not None:
            try:
                self.on_transition(transition)
            except Exception:
                log.exception("transition hook failed for %s", transition)
        else:
            level = (
                logging.INFO if transition.new in (BackendState.UP, BackendState.ASLEEP) else logging.WARNING
            )
            log.log(level, "%s", transition)

    # -- background loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Probe every backend at its own interval until `stop` is set; follows config reloads."""
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while not stop.is_set():
                self._changed.clear()
                for name in self.config.backends:
                    if name not in tasks or tasks[name].done():
                        tasks[name] = asyncio.create_task(self._loop(name, stop), name=f"probe:{name}")
                for name in list(tasks):
                    if name not in self.config.backends:
                        tasks.pop(name).cancel()
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._changed.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            for task in tasks.values():
                task.cancel()
            for task in tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _loop(self, name: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            backend = self.config.backends.get(name)
            if backend is None:
                return
            await self.probe_one(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=probe_interval(backend))


async def probe_backends(
    config: FabricConfig, names: list[str], timeout: float | None = None
) -> dict[str, BackendHealth]:
    """One probe of each named backend, concurrently; nothing logged (the report says it all)."""
    connect = (
        config.gateway.connect_timeout if timeout is None else min(timeout, config.gateway.connect_timeout)
    )
    client = UpstreamClient(connect_timeout=connect)
    client.route_unix(unix_routes(config.backends.values()))
    try:
        if timeout is not None:
            config = _with_timeout(config, timeout)
        checker = HealthChecker(config, client, on_transition=lambda _t: None, on_drift=lambda _b, _m: None)
        return await checker.probe_all(names)
    finally:
        await client.aclose()


def _with_timeout(config: FabricConfig, timeout: float) -> FabricConfig:
    backends = {
        name: replace(b, health=replace(b.health, timeout=timeout)) for name, b in config.backends.items()
    }
    return replace(config, backends=backends)
