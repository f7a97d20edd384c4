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
# A member started for a request and then up this long with nothing in flight has served it (the held
# request goes within a probe interval) or its client gave up: the next swap may take the group.
_SERVE_GRACE = 3.0


class LocalStarter(Protocol):
    """What models on demand need of the local supervisor (`aifabric.local.supervisor.Supervisor`)."""

    def states(self) -> dict[str, str]: ...

    def start_backend(self, name: str) -> None: ...

    def idle_backend(self, name: str, why: str) -> None: ...


class OnDemand:
    """Starts local models on demand for the data plane (module docstring). In an exclusive group the
    swaps run one after another: a request for another member while one is under way waits for it, then
    for the member it started to serve what it was started for, then takes its turn."""

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
        # By exclusive group: the member being started and the task that starts it (the group's last).
        self._swaps: dict[str, tuple[str, asyncio.Task[None]]] = {}

    def start(self, backends: list[str]) -> float:
        """When a role's targets are all asleep: start the first of `backends` that is a model on demand
        not running; how long the request may be held for it (retry.warmup_wait, as while a model
        loads, plus the drain time when it has to wait for the group's others), 0 when none is."""
        config = self._config()
        healths = self._healths()
        for name in backends:
            backend = config.backends.get(name)
            health = healths.get(name)
            local = backend.local if backend is not None else None
            # start: always with idle_stop or exclusive too: once stopped, the next request restarts it
            if local is None or not local.on_demand or health is None:
                continue
            if health.state is not BackendState.ASLEEP:
                continue
            hold = config.retry.warmup_wait
            if not local.exclusive or local.group is None:
                self._control.start_backend(name)
                log.info("backend %s: started on demand for a request", name)
                return hold
            group = local.group
            pending = self._swaps.get(group)
            if pending is not None and pending[0] == name:
                return hold + self._drain  # its start is under way: held like the request that asked
            prior = pending[1] if pending is not None else None
            if prior is None and not self._busy(name, group):
                self._swap(name, group)  # nothing to wait for: at once
                return hold
            task = asyncio.get_running_loop().create_task(self._swap_in_turn(name, group, prior))
            self._swaps[group] = (name, task)
            task.add_done_callback(functools.partial(self._swap_done, group))
            return hold + (2 if prior is not None else 1) * self._drain
        return 0.0

    def _running(self, name: str, group: str) -> list[str]:
        """The group's members other than `name` that the supervisor runs (or is starting) now."""
        states = self._control.states()
        return [
            other
            for other, b in self._config().backends.items()
            if b.local is not None
            and b.local.group == group
            and other != name
            and states.get(other) not in (None, "idle", "stopped", "failed")
        ]

    def _busy(self, name: str, group: str) -> bool:
        healths = self._healths()
        return any((h := healths.get(o)) is not None and h.in_flight > 0 for o in self._running(name, group))

    def _swap_done(self, group: str, task: asyncio.Task[None]) -> None:
        pending = self._swaps.get(group)
        if pending is not None and pending[1] is task:
            del self._swaps[group]

    async def _swap_in_turn(self, name: str, group: str, prior: asyncio.Task[None] | None) -> None:
        try:
            if prior is not None:
                await asyncio.wait({prior})  # its own errors are its own (logged there)
                await self._until_served(name, group)
            deadline = self._clock() + self._drain
            while self._busy(name, group) and self._clock() < deadline:
                await asyncio.sleep(_DRAIN_POLL)
            if self._busy(name, group):
                log.warning(
                    "backend %s: %s still had requests in flight after %g s; stopped anyway",
                    name,
                    ", ".join(self._running(name, group)),
                    self._drain,
                )
            self._swap(name, group)
        except Exception:  # the supervisor refused: said, and the held request fails on its own terms
            log.exception("backend %s: could not be started on demand", name)

    async def _until_served(self, name: str, group: str) -> None:
        """The member the previous swap started serves what it was started for before this swap takes
        the group: until it is up and has had requests in flight and finished them (or a few seconds
        up without any), within the drain time."""
        deadline = self._clock() + self._drain
        seen_busy = False
        up_since: float | None = None
        while self._clock() < deadline:
            healths = self._healths()
            members = [healths[o] for o in self._running(name, group) if o in healths]
            busy = any(h.in_flight > 0 for h in members)
            seen_busy = seen_busy or busy
            up = any(h.state in (BackendState.UP, BackendState.DEGRADED) for h in members)
            now = self._clock()
            if up and up_since is None:
                up_since = now
            if (seen_busy and not busy) or (up_since is not None and now - up_since >= _SERVE_GRACE):
                return
            await asyncio.sleep(_DRAIN_POLL)

    def _swap(self, name: str, group: str) -> None:
        """Stop what else of the group runs now (read now, not when the request came), start `name`."""
        for other in self._running(name, group):
            self._control.idle_backend(other, f"stopped: {name} of group {group} started (exclusive)")
        self._control.start_backend(name)
        log.info("backend %s: started on demand for a request", name)

    async def aclose(self) -> None:
        tasks = [task for _, task in self._swaps.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


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
