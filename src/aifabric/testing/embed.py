"""The bundled embeddings server on a real socket, in a thread of its own, for tests with blocking clients.

It listens at once and loads its model only when `load()` is called, so a test sees the "loading"
state first if it wants to. It runs on uvloop, as `python -m aifabric.local.embed_server` does.
"""

from __future__ import annotations

import asyncio
import threading

import uvloop

from aifabric.local.batcher import BatchPolicy
from aifabric.local.embed_server import EmbedServer

__all__ = ["RunningEmbedServer"]


class RunningEmbedServer:
    def __init__(self, model: str, *, threads: int = 1, policy: BatchPolicy | None = None) -> None:
        self.server = EmbedServer(model=model, threads=threads, policy=policy)
        self.loop = uvloop.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.port = await self.server.start("127.0.0.1", 0)
        self._ready.set()
        await self._stop.wait()
        await self.server.close()

    def start(self) -> RunningEmbedServer:
        self._thread.start()
        assert self._ready.wait(10), "the embeddings server did not start"
        return self

    def load(self) -> None:
        """Load the model (blocking, in the caller's thread, as the real server does in a worker)."""
        assert self.server.load(), self.server.load_error

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
