"""Small helpers for the resilience tests (the gateway itself is aifabric.testing.gateway.RunningGateway,
started by the `start_gateway` fixture of tests/conftest.py): what an operator or a client sees when
the estate misbehaves."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from aifabric.config.load import load_config_text
from aifabric.config.schema import FabricConfig


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
