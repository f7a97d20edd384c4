"""Waking hosts: the magic packet's bytes on a real UDP socket (loopback only), a command, the rate limit."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifabric.config.load import load_config_text
from aifabric.config.schema import HostConfig, WakeConfig
from aifabric.core import BackendHealth, BackendState
from aifabric.errors import CommandError
from aifabric.health.power import PowerManager, WakeEvent, WakeLimiter, magic_packet, wake_host

MAC = "aa:bb:cc:0d:0e:0f"
MAC_BYTES = bytes([0xAA, 0xBB, 0xCC, 0x0D, 0x0E, 0x0F])


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A UDP listener on 127.0.0.1, standing in for the sleeping NIC."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_the_magic_packet_is_six_ff_then_the_mac_sixteen_times() -> None:
    packet = magic_packet(MAC)
    assert len(packet) == 102
    assert packet == b"\xff" * 6 + MAC_BYTES * 16
    assert magic_packet("AA-BB-CC-0D-0E-0F") == packet
    with pytest.raises(ValueError):
        magic_packet("aa:bb:cc")


def test_wake_sends_the_packet_to_the_configured_address_and_port(receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    host = HostConfig(
        "ws", "127.0.0.1", always_on=False, wake=WakeConfig(mac=MAC, broadcast="127.0.0.1", port=port)
    )
    how = asyncio.run(wake_host(host))
    data, _ = receiver.recvfrom(1024)
    assert data == b"\xff" * 6 + MAC_BYTES * 16
    assert how == f"magic packet for {MAC} sent to 127.0.0.1:{port}"


def test_wake_runs_the_command_and_reports_its_failure(tmp_path: Path) -> None:
    sink = tmp_path / "woken"
    host = HostConfig("ws", "h", always_on=False, wake=WakeConfig(command=f"echo power-on >> {sink}"))
    assert asyncio.run(wake_host(host)) == "wake command run"
    assert sink.read_text() == "power-on\n"
    broken = HostConfig("ws", "h", always_on=False, wake=WakeConfig(command="echo plug offline; exit 3"))
    with pytest.raises(CommandError, match="exited with 3: plug offline"):
        asyncio.run(wake_host(broken))


def test_one_wake_per_host_per_min_interval() -> None:
    host = HostConfig("ws", "h", always_on=False, wake=WakeConfig(command="true", min_interval=60.0))
    limiter = WakeLimiter()
    assert limiter.due(host, 100.0)
    assert not limiter.due(host, 130.0)
    assert limiter.due(host, 160.0)


FABRIC = """\
hosts:
  ws: {{address: 127.0.0.1, always_on: false, wake: {{mac: "{mac}", broadcast: 127.0.0.1, port: {port}}}}}
backends:
  ws-vllm: {{host: ws, kind: vllm, url: "http://127.0.0.1:9/v1"}}
  other: {{kind: vllm, url: "http://127.0.0.1:9/v1"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: ws-vllm, model: m}}]}}
retry: {{wake_wait: 30s}}
"""


def test_the_manager_wakes_only_when_every_backend_is_asleep_once_per_interval(
    receiver: socket.socket,
) -> None:
    config = load_config_text(
        FABRIC.format(mac=MAC, port=receiver.getsockname()[1]), "fabric.yaml", environ={}
    )
    healths = {"ws-vllm": BackendHealth("ws-vllm", always_on=False), "other": BackendHealth("other")}
    probed: list[str] = []
    events: list[WakeEvent] = []
    now = [0.0]

    async def probe(name: str) -> None:
        probed.append(name)
        healths[name].state = BackendState.UP  # the host came up

    async def on_wake(event: WakeEvent) -> None:
        events.append(event)

    async def scenario() -> None:
        power = PowerManager(config, lambda: healths, probe, on_wake=on_wake, clock=lambda: now[0])
        assert power.wake_for(["ws-vllm"], "for a request for role chat-fast") == 0.0  # not asleep: nothing
        healths["ws-vllm"].state = BackendState.ASLEEP
        assert power.wake_for(["ws-vllm", "other"], "x") == 0.0  # another backend is awake
        assert power.wake_for(["ws-vllm"], "for a request for role chat-fast") == 30.0  # hold up to wake_wait
        assert (
            power.wake_for(["ws-vllm"], "for a request for role chat-fast") == 30.0
        )  # rate-limited: no send
        while not probed:
            await asyncio.sleep(0.05)
        await power.aclose()

    asyncio.run(scenario())
    data, _ = receiver.recvfrom(1024)
    assert data == magic_packet(MAC)
    receiver.settimeout(0.3)
    with pytest.raises(TimeoutError):
        receiver.recvfrom(1024)  # one packet, not two
    assert [(e.host, e.ok, e.why) for e in events] == [("ws", True, "for a request for role chat-fast")]
    assert probed == ["ws-vllm"]
