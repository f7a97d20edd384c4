"""vLLM's sleep mode on idle: free a remote GPU's memory while nobody uses it, wake it on the next request.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aifabric.config.schema import BackendConfig, FabricConfig
from aifabric.core import BackendHealth, BackendState, FailureClass
from aifabric.errors import UpstreamFailure
from aifabric.http.client import UpstreamClient, split_url

__all__ = ["EngineSleep"]

log = logging.getLogger("aifabric.power")

_CALL_TIMEOUT = 30.0


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

    def update_config(self, config: FabricConfig) -> None:
        self.config = config
        now = self._clock()
        for name in self._sleepers():
            self._last_used.setdefault(name, now)

    def _sleepers(self) -> list[str]:
        return [n for n, b in self.config.backends.items() if b.sleep_when_idle is not None]

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

    async def run(self, stop: asyncio.Event) -> None:
        """Check for idle engines every few seconds until `stop` is set."""
        while not stop.is_set():
            sleepers = [self.config.backends[n].sleep_when_idle or 0.0 for n in self._sleepers()]
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
