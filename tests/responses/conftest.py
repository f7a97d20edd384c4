"""Fixtures: fake backends that serve /v1/responses natively or only chat completions, a gateway in front
of them, and the official `openai` client. A real Redis for the shared store: `redis_server`
(tests/conftest.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

sys.path.insert(0, str(Path(__file__).parents[1] / "state"))
from responses_support import FABRIC, Estate


@pytest.fixture
def estate() -> Iterator[Estate]:
    backends = [
        FakeBackend(kind="vllm", models=("m",)).start(),
        FakeBackend(kind="llama-cpp-python", models=("m",)).start(),
        FakeBackend(kind="llamacpp", models=("m",)).start(),
        FakeBackend(kind="vllm", models=("m",)).start(),
    ]
    gateways: list[RunningGateway] = []

    def start(state: str = "memory") -> RunningGateway:
        urls = {name: fb.base_url for name, fb in zip(("nat", "tr", "llama", "flaky"), backends, strict=True)}
        config = load_config_text(FABRIC.format(state=state, **urls), "fabric.yaml", environ={})
        gw = RunningGateway(config).start()
        gateways.append(gw)
        return gw

    yield Estate(*backends, start=start)
    for gw in gateways:
        gw.stop()
    for fb in backends:
        fb.stop()


@pytest.fixture
def gateway(estate: Estate) -> RunningGateway:
    return estate.start()


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return gateway.openai()
