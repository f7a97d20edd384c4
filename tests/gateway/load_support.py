"""Helpers of the load-aware routing tests: probe on demand, ask through the official SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aifabric.testing.gateway import RunningGateway

StartGateway = Callable[..., RunningGateway]  # the start_gateway fixture of tests/conftest.py


def probe(gw: RunningGateway, *backends: str) -> None:
    """One health check of each backend, now, on the gateway's own loop."""
    assert gw.gateway is not None
    checker = gw.gateway.checker
    for name in backends:
        asyncio.run_coroutine_threadsafe(checker.probe_one(name), gw.loop).result(10)


def ask(
    gw: RunningGateway,
    model: str = "chat-fast",
    messages: list[dict[str, str]] | None = None,
    **extra: Any,
) -> dict[str, str]:
    """One chat completion through the official SDK; the gateway's response headers."""
    raw = gw.openai().chat.completions.with_raw_response.create(
        model=model, messages=messages or [{"role": "user", "content": "hi"}], max_tokens=4, **extra
    )
    raw.parse()
    return {k.lower(): v for k, v in raw.headers.items()}
