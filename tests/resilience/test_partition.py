"""A real network partition: the backend runs in a network namespace of its own, reached over a veth
pair on a private link-local /30 that exists only between the two ends created here. The gateway
(root namespace) loses it when the far end of the link goes dark, fails over, alerts, and recovers when
the link heals. Everything created here is removed, even when the test fails."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from netns_support import NS_ADDR, Partitionable
from resilience_support import post_chat, report

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

pytestmark = pytest.mark.netns

StartGateway = Callable[..., RunningGateway]
MakeBackend = Callable[..., FakeBackend]


def test_partitioned_backend_fails_over_alerts_and_recovers_when_the_link_heals(
    start_gateway: StartGateway, backend: MakeBackend, remote: Partitionable
) -> None:
    cloud = backend(kind="openai", models=("gpt-4o",))
    embed = backend(models=("bge-base-en-v1.5",))
    probes = "health: {interval: 200ms, timeout: 300ms, unhealthy_threshold: 2, healthy_threshold: 1}"
    gw = start_gateway(
        f"""
gateway: {{connect_timeout: 500ms}}
hosts:
  armitage: {{address: {NS_ADDR}, always_on: true}}
  motoko:   {{address: 127.0.0.1, always_on: true}}
backends:
  armitage-vllm: {{host: armitage, kind: vllm, url: "{remote.url}", {probes}}}
  motoko-embed:  {{host: motoko, kind: vllm, url: "{embed.url}", {probes}}}
  openai:        {{kind: openai, url: "{cloud.url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: armitage-vllm, model: Qwen2.5-7B-Instruct-AWQ}}],
              fallbacks: [openai/strong]}}
  embeddings-general: {{kind: embeddings, targets: [{{backend: motoko-embed, model: bge-base-en-v1.5}}]}}
  openai/strong: {{kind: chat, targets: [{{backend: openai, model: gpt-4o}}]}}
retry: {{deadline: 10s, try_timeout: 1s}}
monitoring: {{interval: 200ms}}
""",
        probe=True,
    )
    wait_until(lambda: gw.state("armitage-vllm") == "up", "the namespaced backend to be probed up")
    assert post_chat(gw.url).headers["x-aifabric-backend"] == "armitage-vllm"

    remote.partition()
    cut_at = time.monotonic()
    # Every request is answered while the link is down: by timing out and failing over at first,
    # then straight from the fallback once the probes have marked the backend down.
    answered = []
    while gw.state("armitage-vllm") != "down":
        resp = post_chat(gw.url)
        assert resp.status_code == 200
        answered.append(resp.headers["x-aifabric-role"])
        assert time.monotonic() - cut_at < 30, "the partition was never detected"
    report("partition detected (backend down) after", time.monotonic() - cut_at)
    assert set(answered) <= {"openai/strong"}
    resp = post_chat(gw.url)
    assert (resp.headers["x-aifabric-role"], resp.headers["x-aifabric-attempts"]) == ("openai/strong", "1")
    # The runbook's mitigation: embeddings on motoko (local) still work.
    emb = httpx.post(
        gw.url + "/v1/embeddings", json={"model": "embeddings-general", "input": "x"}, timeout=10
    )
    assert emb.status_code == 200
    wait_until(
        lambda: any(a["subject"] == "armitage-vllm" for a in httpx.get(gw.url + "/alerts").json()["active"]),
        "the backend-down alert",
    )

    remote.heal()
    healed_at = time.monotonic()
    wait_until(lambda: gw.state("armitage-vllm") == "up", "the backend to be probed up after the heal", 30)
    report("recovered (backend up) after the heal, in", time.monotonic() - healed_at)
    wait_until(lambda: post_chat(gw.url).headers["x-aifabric-backend"] == "armitage-vllm", "traffic back", 30)
    wait_until(lambda: httpx.get(gw.url + "/alerts").json()["active"] == [], "the alert to resolve")
