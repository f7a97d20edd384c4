"""A real gateway on a real socket, in a thread of its own, for tests that use blocking clients.

It runs on uvloop, the production event loop, and is stopped (connections drained, loop closed) by
`stop()`. `gateway` is the live `Gateway` object; read its state with `call()`, on its own loop.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import uvloop

from aifabric.config.schema import FabricConfig
from aifabric.gateway.app import Gateway
from aifabric.routing.target import TargetState

if TYPE_CHECKING:
    import openai  # the `testing` extra: imported when a test asks for a client, not before

__all__ = ["RunningGateway"]

_T = TypeVar("_T")


class RunningGateway:
    """The production `Gateway` on 127.0.0.1. `port` picks the port (0: any free one), for a check
    that must know the URL before it starts."""

    def __init__(self, config: FabricConfig, *, probe: bool = False, port: int = 0) -> None:
        self.config = config
        self.probe = probe
        # The production event loop (uvloop), not only asyncio's own.
        self.loop = uvloop.new_event_loop()
        self.gateway: Gateway | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._bind_port = port
        self.port = 0
        self._clients: list[openai.OpenAI] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.gateway = Gateway(self.config, probe=self.probe)
        server = await self.gateway.start("127.0.0.1", self._bind_port)
        self.port = server.port
        self._ready.set()
        await self._stop.wait()
        await self.gateway.close()

    def start(self) -> RunningGateway:
        self._thread.start()
        assert self._ready.wait(10), "gateway did not start"
        return self

    def openai(self, api_key: str = "unused", *, timeout: float | None = None) -> openai.OpenAI:
        """The official client pointed at this gateway, with no retries of its own (every failure it
        reports is the gateway's); closed by `stop()`. Needs the `openai` package (`pip install
        'aifabric[testing]'`)."""
        import openai

        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **extra)
        self._clients.append(client)
        return client

    def stop(self) -> None:
        """Stop serving (a clean shutdown, as on SIGTERM); a second call does nothing."""
        for client in self._clients:
            client.close()
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the gateway's loop (state is read and changed where it is written)."""
        fut = asyncio.run_coroutine_threadsafe(_call(fn), self.loop)
        return fut.result(5)

    def target(self, role: str, backend: str) -> TargetState:
        """The live target of `role` on `backend` (read its fields through `call`)."""
        assert self.gateway is not None
        for t in self.gateway.table.routes[role].targets:
            if t.backend.name == backend:
                return t
        raise KeyError(f"{role} has no target on {backend}")

    def state(self, backend: str) -> str:
        """The backend's health state as the gateway believes it now ("up", "down", ...)."""
        assert self.gateway is not None
        gateway = self.gateway
        return self.call(lambda: str(gateway.table.healths[backend].state))

    def health(self) -> dict[str, Any]:
        """GET /health, as an operator's script reads it."""
        with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
            view: dict[str, Any] = orjson.loads(resp.read())
        return view

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _call(fn: Callable[[], _T]) -> _T:
    return fn()
