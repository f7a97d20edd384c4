"""Idle engines give their memory back: vLLM's sleep mode, and local models started and stopped on demand.

A vLLM server started with `--enable-sleep-mode` offloads its weights and drops its KV cache on
`POST /sleep` and takes them back on `POST /wake_up`. With `backends.NAME.sleep_when_idle: 15m`:

    awake ──no request for sleep_when_idle, nothing in flight, backend up──> POST /sleep ──> asleep
    asleep ──a request for it──> POST /wake_up (the request, and any other meanwhile, held) ──> awake

The data plane calls `ready(name)` before each attempt at such a backend: it records the use, and when
the engine sleeps it sends one `POST /wake_up` (concurrent requests share it) and returns once it is
done, within `retry.warmup_wait`. The control loop (`run`) puts idle engines to sleep. Each gateway
process tracks its own requests: with several workers or replicas, another one's traffic is not seen,
so use this with one gateway process per sleeping backend's users (a wake is harmless; a sleep while
another process sends requests makes them wait for its wake).

Local models on demand (`local: {start: on_demand, idle_stop, group, exclusive}` under `aifabric up`) work
the same way through the supervisor: `OnDemand.start` (from the data plane, when a role's targets are
all asleep) starts one, first stopping the other members of its exclusive group, and the request waits
as during loading; `tick` stops one unused for its `idle_stop`, which then shows as asleep. A member
still answering requests is not cut off: the swap waits until its requests in flight (this process's)
are done, up to `SWAP_DRAIN` seconds, as llama-swap does; the new model's request is held meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aifabric.config.schema import BackendConfig, FabricConfig
from aifabric.core import BackendHealth, BackendState, FailureClass
from aifabric.errors import UpstreamFailure
from aifabric.http.client import UpstreamClient, split_url

__all__ = ["SWAP_DRAIN", "EngineSleep", "LocalStarter", "OnDemand"]

log = logging.getLogger("aifabric.power")

_CALL_TIMEOUT = 30.0
# How long a model of an exclusive group may go on answering its requests in flight before the model
# asked for takes its place anyway (what is still running is then cut off).
SWAP_DRAIN = 30.0
_DRAIN_POLL = 0.05


class LocalStarter(Protocol):
    """What models on demand need of the local supervisor (`aifabric.local.supervisor.Supervisor`)."""

    def states(self) -> dict[str, str]: ...

    def start_backend(self, name: str) -> None: ...

    def idle_backend(self, name: str, why: str) -> None: ...


class OnDemand:
    """Starts local models on demand for the data plane (module docstring), one swap per group at a time."""

    def __init__(
        self,
        config: Callable[[], FabricConfig],
        healths: Callable[[], Mapping[str, BackendHealth]],
        control: LocalStarter,
        *,
        drain: float = SWAP_DRAIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._healths = healths
        self._control = control
        self._drain = drain
        self._clock = clock
        self._swaps: dict[str, asyncio.Task[None]] = {}  # by the name of the backend being started

    def start(self, backends: list[str]) -> float:
        """When a role's targets are all asleep: start the first of `backends` that is a model on demand
        not running (an `exclusive` member of a `group`: once the group's others are stopped, each
        after its requests in flight are done); how long the request may be held for it
        (retry.warmup_wait, as while a model loads), 0 when none is."""
        config = self._config()
        healths = self._healths()
        for name in backends:
            backend = config.backends.get(name)
            health = healths.get(name)
            local = backend.local if backend is not None else None
            if local is None or local.start != "on_demand" or health is None:
                continue
            if health.state is not BackendState.ASLEEP:
                continue
            if name in self._swaps:
                return config.retry.warmup_wait  # its swap is under way: held like the request that asked
            others: list[str] = []
            if local.exclusive and local.group is not None:
                states = self._control.states()
                for other, b in config.backends.items():
                    same = b.local is not None and b.local.group == local.group and other != name
                    if same and states.get(other) not in (None, "idle", "stopped", "failed"):
                        others.append(other)
            busy = [o for o in others if (h := healths.get(o)) is not None and h.in_flight > 0]
            if busy:
                swap = self._swap_when_drained(name, others, local.group)
                task = asyncio.get_running_loop().create_task(swap)
                self._swaps[name] = task
                task.add_done_callback(functools.partial(self._swap_done, name))
                log.info(
                    "backend %s: starts once %s finish their requests in flight (exclusive group %s)",
                    name,
                    ", ".join(busy),
                    local.group,
                )
            else:
                self._swap(name, others, local.group)
            return config.retry.warmup_wait
        return 0.0

    def _swap_done(self, name: str, _task: asyncio.Task[None]) -> None:
        self._swaps.pop(name, None)

    async def _swap_when_drained(self, name: str, others: list[str], group: str | None) -> None:
        deadline = self._clock() + self._drain
        while self._clock() < deadline:
            healths = self._healths()
            if all((h := healths.get(o)) is None or h.in_flight == 0 for o in others):
                break
            await asyncio.sleep(_DRAIN_POLL)
        else:
            log.warning(
                "backend %s: %s still had requests in flight after %g s; stopped anyway",
                name,
                ", ".join(others),
                self._drain,
            )
        self._swap(name, others, group)

    def _swap(self, name: str, others: list[str], group: str | None) -> None:
        for other in others:
            self._control.idle_backend(other, f"stopped: {name} of group {group} started (exclusive)")
        self._control.start_backend(name)
        log.info("backend %s: started on demand for a request", name)

    async def aclose(self) -> None:
        for task in list(self._swaps.values()):
            task.cancel()
        for task in list(self._swaps.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task


class EngineSleep:
    """Sleeps idle vLLM engines and wakes them for the requests that need them (module docstring)."""

    def __init__(
        self,
        config: FabricConfig,
        healths: Callable[[], dict[str, BackendHealth]],
        client: UpstreamClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._healths = healths
        self._client = client
        self._clock = clock
        start = clock()
        self._last_used: dict[str, float] = {name: start for name in self._sleepers()}
        self._waking: dict[str, asyncio.Task[None]] = {}
        # Under `aifabric up`: stops a model on demand after its idle_stop (the supervisor's idle_backend)
        self.stop_local: Callable[[str, str], None] | None = None

    def update_config(self, config: FabricConfig) -> None:
        self.config = config
        now = self._clock()
        for name in self._sleepers():
            self._last_used.setdefault(name, now)

    def _sleepers(self) -> list[str]:
        return [n for n, b in self.config.backends.items() if b.idles]

    async def ready(self, name: str) -> None:
        """Before an attempt at `name`: note the use; if its engine sleeps, wake it and wait for that."""
        self._last_used[name] = self._clock()
        health = self._healths().get(name)
        if health is None or not health.engine_asleep:
            return
        task = self._waking.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._wake(name))
            self._waking[name] = task
            task.add_done_callback(lambda _t: self._waking.pop(name, None))
        with contextlib.suppress(UpstreamFailure, TimeoutError):  # the attempt then fails and says why
            async with asyncio.timeout(self.config.retry.warmup_wait):
                await asyncio.shield(task)

    async def _wake(self, name: str) -> None:
        backend = self.config.backends[name]
        await self._call(backend, "/wake_up")
        health = self._healths().get(name)
        if health is not None:
            health.engine_asleep = False
        log.info("backend %s: engine woken from sleep mode (POST /wake_up) for a request", name)

    async def _call(self, backend: BackendConfig, path: str) -> None:
        origin, _ = split_url(backend.url)
        headers = [("content-type", "application/json")]
        if backend.api_key:
            headers.append(("authorization", f"Bearer {backend.api_key.reveal()}"))
        resp = await self._client.send(origin, "POST", path, headers, b"", _CALL_TIMEOUT)
        try:
            body = await resp.read()
        finally:
            resp.close()
        if not 200 <= resp.status < 300:
            detail = body.decode("utf-8", "replace")[:200]
            failure = FailureClass.UPSTREAM_5XX if resp.status >= 500 else FailureClass.CLIENT_ERROR
            what = f"POST {path} answered {resp.status}: {detail}"
            raise UpstreamFailure(failure, what, status=resp.status)

    async def tick(self) -> None:
        """Put every engine idle for its sleep_when_idle to sleep (one pass; `run` repeats it)."""
        now = self._clock()
        healths = self._healths()
        for name in self._sleepers():
            backend = self.config.backends[name]
            health = healths.get(name)
            if backend.local is not None and backend.local.idle_stop is not None:
                self._stop_if_idle(name, backend.local.idle_stop, health, now)
                continue
            idle_for = backend.sleep_when_idle
            if health is None or idle_for is None or health.engine_asleep or name in self._waking:
                continue
            if health.in_flight or health.state not in (BackendState.UP, BackendState.DEGRADED):
                continue
            if now - self._last_used.get(name, now) < idle_for:
                continue
            try:
                await self._call(backend, "/sleep?level=1")
            except (UpstreamFailure, TimeoutError) as exc:
                log.warning("backend %s: could not put its engine to sleep: %s", name, exc)
                self._last_used[name] = now  # try again after another idle period, not every tick
                continue
            health.engine_asleep = True
            log.info("backend %s: engine put to sleep after %gs idle (POST /sleep)", name, idle_for)

    def _stop_if_idle(self, name: str, idle_stop: float, health: BackendHealth | None, now: float) -> None:
        """A model on demand unused for its idle_stop: the supervisor stops it (told back as "idle")."""
        if self.stop_local is None or health is None or health.in_flight:
            return
        if health.state not in (BackendState.UP, BackendState.DEGRADED) or health.stopped is not None:
            return
        if now - self._last_used.get(name, now) < idle_stop:
            return
        self._last_used[name] = now
        self.stop_local(name, f"stopped after {idle_stop:g}s unused (idle_stop); started again on demand")

    async def run(self, stop: asyncio.Event) -> None:
        """Check for idle engines every few seconds until `stop` is set."""
        while not stop.is_set():
            sleepers = [_idle_bound(self.config.backends[n]) for n in self._sleepers()]
            every = max(0.2, min([5.0, *(s / 4 for s in sleepers)]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
            if stop.is_set():
                return
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the gateway's other control loops
                log.exception("engine sleep check failed")


def _idle_bound(backend: BackendConfig) -> float:
    if backend.local is not None and backend.local.idle_stop is not None:
        return backend.local.idle_stop
    return backend.sleep_when_idle or 0.0
