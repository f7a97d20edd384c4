"""A real network partition: the backend runs in a network namespace of its own, reached over a veth
pair on a private link-local /30 that exists only between the two ends created here. The gateway
(root namespace) loses it when the far end of the link goes dark, fails over, alerts, and recovers when
the link heals. Everything created here is removed, even when the test fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from resilience_support import post_chat, report

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

pytestmark = pytest.mark.netns

StartGateway = Callable[..., RunningGateway]
MakeBackend = Callable[..., FakeBackend]

# 169.254.213.0/30: link-local, never routed; both addresses live only on the veth pair below.
ROOT_ADDR, NS_ADDR, PREFIX = "169.254.213.1", "169.254.213.2", 30
PORT = 8000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Partitionable:
    """A namespace with a fake vLLM in it, and a switch to cut its link."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.ns = f"aifab-part-{tag}"
        self.veth = f"aifr{tag}"  # root side (IFNAMSIZ allows 15 characters)
        self.peer = f"aifn{tag}"
        self.proc: subprocess.Popen[str] | None = None

    def setup(self) -> None:
        ip("netns", "add", self.ns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", self.peer)
        ip("link", "set", self.peer, "netns", self.ns)
        ip("addr", "add", f"{ROOT_ADDR}/{PREFIX}", "dev", self.veth)
        ip("link", "set", self.veth, "up")
        ip("netns", "exec", self.ns, "ip", "addr", "add", f"{NS_ADDR}/{PREFIX}", "dev", self.peer)
        ip("netns", "exec", self.ns, "ip", "link", "set", self.peer, "up")
        ip("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "aifabric.testing.fake_backend"]
        cmd += [
            "--host",
            NS_ADDR,
            "--port",
            str(PORT),
            "--kind",
            "vllm",
            "--model",
            "Qwen2.5-7B-Instruct-AWQ",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), f"the fake backend in {self.ns} did not start: {line!r}"

    @property
    def url(self) -> str:
        return f"http://{NS_ADDR}:{PORT}/v1"

    def partition(self) -> None:
        # The far end of the link goes dark, as a host behind a dead VPN: the gateway's side keeps its
        # address and route, its packets go nowhere. (`tc netem loss 100%` does the same where the
        # kernel has netem; this one needs nothing beyond iproute2.)
        ip("netns", "exec", self.ns, "ip", "link", "set", self.peer, "down")

    def heal(self) -> None:
        ip("netns", "exec", self.ns, "ip", "link", "set", self.peer, "up")

    def teardown(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        # Deleting one end of a veth pair deletes both; the namespace goes with its processes gone.
        subprocess.run(["ip", "link", "del", self.veth], check=False, capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True, timeout=10)


@pytest.fixture
def remote() -> Iterator[Partitionable]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (make test runs as root)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (the ip command was not found): apt-get install iproute2")
    host = Partitionable()
    try:
        host.setup()
        yield host
    finally:
        host.teardown()
    # Nothing is left behind.
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert host.ns not in names
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert host.veth not in links


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
