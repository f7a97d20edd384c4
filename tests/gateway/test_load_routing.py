"""Load-aware routing end to end: engines' load signals (fake vLLM /metrics) steer a real gateway.

The gateway probes when the test says so (`probe`), so every step waits for a state it caused, not for
an interval. Clients are the official `openai` SDK; /status and /metrics are read as an operator would.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from load_support import StartGateway, ask, probe

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway


@pytest.fixture
def gpu() -> Iterator[FakeBackend]:
    backend = FakeBackend(kind="vllm", models=("qwen",)).start()
    yield backend
    backend.stop()


@pytest.fixture
def cloud() -> Iterator[FakeBackend]:
    backend = FakeBackend(kind="openai", models=("gpt-4o",)).start()
    yield backend
    backend.stop()


def get(gw: RunningGateway, path: str) -> bytes:
    with urllib.request.urlopen(gw.url + path, timeout=5) as resp:
        body: bytes = resp.read()
    return body


def status_role(gw: RunningGateway, role: str) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(get(gw, "/status"))
    return dict(view["roles"][role])


OVERFLOW_FABRIC = """\
backends:
  gpu: {{kind: vllm, url: "{gpu}"}}
  cloud: {{kind: openai, url: "{cloud}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: gpu, model: qwen}}]
    fallbacks: [openai/strong]
    overflow: {{queue_depth: 3}}
  openai/strong:
    kind: chat
    targets: [{{backend: cloud, model: gpt-4o}}]
"""


def test_a_saturated_role_overflows_to_its_fallback_and_comes_back_as_the_queue_drains(
    start_gateway: StartGateway, gpu: FakeBackend, cloud: FakeBackend
) -> None:
    gw = start_gateway(OVERFLOW_FABRIC.format(gpu=gpu.url, cloud=cloud.url))
    probe(gw, "gpu", "cloud")
    served = ask(gw)
    assert served["x-aifabric-backend"] == "gpu"
    assert "x-aifabric-overflow" not in served

    gpu.set(num_requests_waiting=5, kv_cache_usage=0.97)  # the workstation's queue builds up
    probe(gw, "gpu")
    served = ask(gw)
    assert (served["x-aifabric-backend"], served["x-aifabric-role"]) == ("cloud", "openai/strong")
    assert served["x-aifabric-overflow"] == "saturated"
    assert served["x-aifabric-requested-role"] == "chat-fast"
    role = status_role(gw, "chat-fast")
    assert role["saturated"] is True
    assert role["overflowed"] == 1
    assert role["overflow"] == {"queue_depth": 3, "estimated_wait": None}
    assert role["balance"] == "least_load"
    assert role["targets"][0]["load"]["waiting"] == 5.0
    metrics = get(gw, "/metrics").decode()
    assert 'aifabric_overflow_total{role="chat-fast"} 1' in metrics
    assert 'aifabric_role_saturated{role="chat-fast"} 1' in metrics
    assert 'aifabric_target_queue{role="chat-fast",backend="gpu",model="qwen"} 5' in metrics

    gpu.set(num_requests_waiting=2, kv_cache_usage=0.6)  # drained below the bound
    probe(gw, "gpu")
    served = ask(gw)
    assert served["x-aifabric-backend"] == "gpu"
    assert "x-aifabric-overflow" not in served
    assert status_role(gw, "chat-fast")["saturated"] is False
    assert 'aifabric_role_saturated{role="chat-fast"} 0' in get(gw, "/metrics").decode()
    assert gpu.count("/v1/chat/completions") == 2
    assert cloud.count("/v1/chat/completions") == 1


def test_an_overflowed_request_still_reaches_the_local_target_when_the_fallback_fails(
    start_gateway: StartGateway, gpu: FakeBackend, cloud: FakeBackend
) -> None:
    gw = start_gateway(OVERFLOW_FABRIC.format(gpu=gpu.url, cloud=cloud.url))
    gpu.set(num_requests_waiting=9)
    probe(gw, "gpu", "cloud")
    cloud.set(fail_first_n=1, fail_status=500)
    served = ask(gw)
    assert served["x-aifabric-backend"] == "gpu"  # queued, but served rather than failed
    assert served["x-aifabric-attempts"] == "2"


def test_least_load_sends_requests_to_the_engine_with_room(
    start_gateway: StartGateway, gpu: FakeBackend
) -> None:
    with FakeBackend(kind="vllm", models=("qwen",), num_requests_waiting=6, kv_cache_usage=0.9) as busy:
        gw = start_gateway(
            f"""\
backends:
  idle: {{kind: vllm, url: "{gpu.url}"}}
  busy: {{kind: vllm, url: "{busy.url}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: busy, model: qwen}}, {{backend: idle, model: qwen}}]
"""
        )
        probe(gw, "idle", "busy")
        backends = [ask(gw)["x-aifabric-backend"] for _ in range(8)]
        assert backends == ["idle"] * 8
        assert busy.count("/v1/chat/completions") == 0
        busy.set(num_requests_waiting=0, kv_cache_usage=0.0)
        gpu.set(num_requests_waiting=3)  # now the other one queues
        probe(gw, "idle", "busy")
        assert ask(gw)["x-aifabric-backend"] == "busy"
