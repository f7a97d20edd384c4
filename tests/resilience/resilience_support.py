"""A real gateway on a real socket (its own thread and uvloop), fake backends, and small helpers
for the resilience tests: what an operator or a client sees when the estate misbehaves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import openai

from aifabric.config.load import load_config_text
from aifabric.config.schema import FabricConfig
from aifabric.gateway.app import Gateway
from aifabric.routing.target import TargetState
from aifabric.testing.gateway import RunningGateway as BaseRunningGateway

T = TypeVar("T")


class RunningGateway(BaseRunningGateway):
    """The production Gateway on 127.0.0.1 in a thread, with readers of its state for assertions.
    `port` picks the port (0: any free one), for a check that must know the URL before it starts."""

    def __init__(self, config: FabricConfig, *, probe: bool, port: int = 0) -> None:
        super().__init__(config, probe=probe)
        self._bind_port = port

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.gateway = Gateway(self.config, probe=self.probe)
        server = await self.gateway.start("127.0.0.1", self._bind_port)
        self.port = server.port
        self._ready.set()
        await self._stop.wait()
        await self.gateway.close()

    def openai_client(self, *, timeout: float = 30.0) -> openai.OpenAI:
        """The official client, no retries of its own: every failure it reports is the gateway's."""
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=timeout)
        self._clients.append(client)
        return client

    def read(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the gateway's loop (state is read where it is written), typed."""
        return self.call(fn)  # type: ignore[return-value]

    def target(self, role: str, backend: str) -> TargetState:
        assert self.gateway is not None
        for t in self.gateway.table.routes[role].targets:
            if t.backend.name == backend:
                return t
        raise KeyError(f"{role} has no target on {backend}")

    def state(self, backend: str) -> str:
        assert self.gateway is not None
        gateway = self.gateway
        return self.read(lambda: str(gateway.table.healths[backend].state))

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=5).json()  # type: ignore[no-any-return]


def load(yaml_text: str, environ: dict[str, str] | None = None) -> FabricConfig:
    return load_config_text(yaml_text, "fabric.yaml", environ=environ or {})


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
