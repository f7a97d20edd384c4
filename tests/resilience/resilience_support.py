"""A real gateway on a real socket (its own thread and uvloop), fake backends, and small helpers
for the resilience tests: what an operator or a client sees when the estate misbehaves."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import openai
import uvloop

from aifabric.config.load import load_config_text
from aifabric.config.schema import FabricConfig
from aifabric.gateway.app import Gateway
from aifabric.routing.target import TargetState

T = TypeVar("T")


class RunningGateway:
    """The production Gateway on 127.0.0.1 in a thread; `call` reads its state on its own loop."""

    def __init__(self, config: FabricConfig, *, probe: bool) -> None:
        self.config = config
        self.probe = probe
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

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def openai(self, *, timeout: float = 30.0) -> openai.OpenAI:
        """The official client, no retries of its own: every failure it reports is the gateway's."""
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=timeout)
        self._clients.append(client)
        return client

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the gateway's loop: state is read where it is written."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def target(self, role: str, backend: str) -> TargetState:
        assert self.gateway is not None
        for t in self.gateway.table.routes[role].targets:
            if t.backend.name == backend:
                return t
        raise KeyError(f"{role} has no target on {backend}")

    def state(self, backend: str) -> str:
        assert self.gateway is not None
        return self.call(lambda: str(self.gateway.table.healths[backend].state))  # type: ignore[union-attr]

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=5).json()  # type: ignore[no-any-return]


def load(yaml_text: str, environ: dict[str, str] | None = None) -> FabricConfig:
    return load_config_text(yaml_text, "fabric.yaml", environ=environ or {})


def wait_for(predicate: Callable[[], bool], what: str, limit: float = 10.0) -> float:
    """Poll until `predicate` holds; returns the seconds it took (for the printed timings)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"timed out after {limit} s waiting for: {what}")


def chat(client: openai.OpenAI, model: str = "chat-fast", text: str = "hi") -> Any:
    """One non-streamed chat request; returns the raw response (headers and parsed body)."""
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )


def post_chat(url: str, model: str = "chat-fast", *, timeout: float = 30.0, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=timeout)


def report(label: str, seconds: float) -> None:
    """Timings are printed for the operator reading the test log (run with -s), never asserted."""
    print(f"[resilience] {label}: {seconds * 1000:.0f} ms")
