"""A real gateway on a real socket, in a thread of its own, for tests that use blocking clients.

It runs on uvloop, the production event loop, and is stopped (connections drained, loop closed) by
`stop()`. `gateway` is the live `Gateway` object, for tests that read its routing table.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import uvloop

from aifabric.config.schema import FabricConfig
from aifabric.gateway.app import Gateway

if TYPE_CHECKING:
    import openai  # the `testing` extra: imported when a test asks for a client, not before

__all__ = ["RunningGateway"]


class RunningGateway:
    def __init__(self, config: FabricConfig, *, probe: bool = False) -> None:
        self.config = config
        self.probe = probe
        # The production event loop (uvloop), not only asyncio's own.
        self.loop = uvloop.new_event_loop()
        self.gateway: Gateway | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
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
        server = await self.gateway.start("127.0.0.1", 0)
        self.port = server.port
        self._ready.set()
        await self._stop.wait()
        await self.gateway.close()

    def start(self) -> RunningGateway:
        self._thread.start()
        assert self._ready.wait(10), "gateway did not start"
        return self

    def openai(self, api_key: str = "unused") -> openai.OpenAI:
        """The official client pointed at this gateway; closed when the test ends. Needs the `openai`
        package (`pip install 'aifabric[testing]'`)."""
        import openai

        client = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0)
        self._clients.append(client)
        return client

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: object) -> object:
        """Run a callable on the gateway's loop (to read its state safely)."""
        fut = asyncio.run_coroutine_threadsafe(_call(fn), self.loop)
        return fut.result(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _call(fn: object) -> object:
    return fn()  # type: ignore[operator]
