"""vLLM sleep mode: an idle engine is put to sleep (POST /sleep) and woken (POST /wake_up) before the next
request, which is held meanwhile; a fake vLLM that answers 503 while asleep, the official SDK as client."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from load_support import StartGateway, ask, probe

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until


@pytest.fixture
def gpu() -> Iterator[FakeBackend]:
    with FakeBackend(kind="vllm", models=("qwen",)) as backend:
        yield backend


def backend_view(gw: RunningGateway, name: str) -> dict[str, object]:
    with urllib.request.urlopen(gw.url + "/status", timeout=5) as resp:
        view = json.loads(resp.read())
    return dict(view["backends"][name])


def test_an_idle_engine_sleeps_and_the_next_request_wakes_it_first(
    start_gateway: StartGateway, gpu: FakeBackend
) -> None:
    gw = start_gateway(
        f"""\
backends:
  gpu: {{kind: vllm, url: "{gpu.url}", sleep_when_idle: 2s}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: gpu, model: qwen}}]}}
"""
    )
    probe(gw, "gpu")
    assert ask(gw)["x-aifabric-backend"] == "gpu"
    wait_until(lambda: gpu.switches.sleeping, "the idle engine to be put to sleep")
    sleeps = [r for r in gpu.requests if r.method == "POST" and r.path == "/sleep"]
    assert sleeps and sleeps[-1].query == "level=1"  # level 1: weights offloaded to CPU, KV cache dropped
    assert backend_view(gw, "gpu")["engine_asleep"] is True
    assert backend_view(gw, "gpu")["state"] == "up"  # asleep on purpose is not an outage

    gpu.clear_requests()
    results: list[str] = []

    def client() -> None:
        results.append(ask(gw)["x-aifabric-backend"])

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["gpu"] * 3  # none saw the sleeping engine's 503
    posts = [r.path for r in gpu.requests if r.method == "POST"]
    # One wake for the three, before any of them; (idle again afterwards, it may be put to sleep again.)
    assert posts[:4] == ["/wake_up", *["/v1/chat/completions"] * 3]
