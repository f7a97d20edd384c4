"""Fixtures: fake backends that serve /v1/responses natively or only chat completions, a gateway in front
of them, the official `openai` client, and a real Redis (the state tests' helper) for the shared store."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

sys.path.insert(0, str(Path(__file__).parents[1] / "state"))
from state_support import RedisServer

# A role per way of serving: `native` (a vLLM that serves /v1/responses), `translated` (llama-cpp-python:
# chat completions only), `llama` (llama-server: native, but its streams translated), and `failover`,
# whose own vLLM target falls back to the translated role.
FABRIC = """
gateway: {{host: 127.0.0.1, port: 0}}
state: "{state}"
retry: {{max_attempts: 3, try_timeout: 5s, deadline: 10s, backoff_base: 10ms, backoff_max: 50ms}}
backends:
  nat: {{kind: vllm, url: "{nat}/v1"}}
  tr: {{kind: llama-cpp-python, url: "{tr}/v1"}}
  llama: {{kind: llamacpp, url: "{llama}/v1"}}
  flaky: {{kind: vllm, url: "{flaky}/v1", timeout: 1s}}
roles:
  native: {{kind: chat, targets: [{{backend: nat, model: m}}]}}
  translated: {{kind: chat, targets: [{{backend: tr, model: m}}]}}
  llama: {{kind: chat, targets: [{{backend: llama, model: m}}]}}
  failover: {{kind: chat, targets: [{{backend: flaky, model: m}}], fallbacks: [translated]}}
  vectors: {{kind: embeddings, targets: [{{backend: nat, model: m}}]}}
"""


@dataclass
class Estate:
    nat: FakeBackend
    tr: FakeBackend
    llama: FakeBackend
    flaky: FakeBackend
    start: Callable[..., RunningGateway]

    @property
    def backends(self) -> tuple[FakeBackend, ...]:
        return (self.nat, self.tr, self.llama, self.flaky)


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


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()
