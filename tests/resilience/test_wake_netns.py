"""A workstation that is really off: its vLLM runs in a network namespace whose link is down, so
connections to it time out as to a powered-off machine on the LAN. A request for its role wakes it with
the host's `wake: {command}` (the "power button" brings the link up), is served by the cloud fallback
meanwhile, and traffic goes back to the workstation once it answers. Nothing is sent outside the veth
pair this test creates."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

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


def test_a_switched_off_workstation_is_woken_by_the_request_that_needs_it(
    start_gateway: StartGateway, backend: MakeBackend, remote: Partitionable, tmp_path: Path
) -> None:
    cloud = backend(kind="openai", models=("gpt-4o",))
    presses = tmp_path / "presses"
    power_button = (
        f"echo pressed >> {shlex.quote(str(presses))}; ip netns exec {remote.ns} ip link set {remote.peer} up"
    )
    probes = "health: {interval: 300ms, timeout: 300ms, unhealthy_threshold: 1, healthy_threshold: 1}"
    remote.partition()  # switched off before the gateway ever saw it
    gw = start_gateway(
        f"""
gateway: {{connect_timeout: 300ms}}
hosts:
  wintermute: {{address: {NS_ADDR}, always_on: false, wake: {{command: "{power_button}", min_interval: 1m}}}}
backends:
  wintermute-vllm: {{host: wintermute, kind: vllm, url: "{remote.url}", {probes}}}
  openai: {{kind: openai, url: "{cloud.url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: wintermute-vllm, model: Qwen2.5-7B-Instruct-AWQ}}],
              fallbacks: [openai/strong]}}
  openai/strong: {{kind: chat, targets: [{{backend: openai, model: gpt-4o}}]}}
retry: {{deadline: 10s, try_timeout: 1s}}
""",
        probe=True,
    )
    wait_until(lambda: gw.state("wintermute-vllm") == "asleep", "the workstation to be seen asleep")
    assert not presses.exists(), "nobody asked for it yet: it is left asleep"

    asked_at = time.monotonic()
    first = post_chat(gw.url)
    assert first.status_code == 200
    assert first.headers["x-aifabric-role"] == "openai/strong"  # served meanwhile, not held
    wait_until(presses.exists, "the gateway to press the power button")
    wait_until(lambda: gw.state("wintermute-vllm") == "up", "the woken workstation to be probed up", 30)
    report("woken and probed up after", time.monotonic() - asked_at)
    wait_until(
        lambda: post_chat(gw.url).headers["x-aifabric-backend"] == "wintermute-vllm", "traffic back home", 30
    )
    # Once, however many requests asked while it came up (min_interval), and said so as an INFO alert.
    assert presses.read_text().splitlines() == ["pressed"]
    alerts = httpx.get(gw.url + "/alerts", timeout=5).json()
    woken = [e for e in alerts.get("recent", []) if e.get("rule") == "host_woken"]
    assert woken and woken[-1]["subject"] == "wintermute" and woken[-1]["severity"] == "info", alerts
