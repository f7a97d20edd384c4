"""`aifabric wake HOST` with no gateway to ask: a real process sends the magic packet to a UDP receiver
on loopback, or runs the command, and says that no alert was raised; a host it cannot wake is a usage
error that says the fix. (Through a running gateway, which raises the alert: tests/gateway/test_wake.py.)"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port
from cli_process import aifabric

# Nothing listens here: the wake is sent from the command itself.
NO_GATEWAY = f"http://127.0.0.1:{free_port()}"


def wake(*argv: str) -> subprocess.CompletedProcess[str]:
    return aifabric("wake", *argv, "--url", NO_GATEWAY)


def write_fabric(tmp_path: Path, wake: str) -> Path:
    path = tmp_path / "fabric.yaml"
    path.write_text(
        f"""\
hosts:
  ws: {{address: 127.0.0.1, always_on: false, wake: {wake}}}
  rack: {{address: 127.0.0.2}}
backends:
  ws-vllm: {{host: ws, kind: vllm, url: "http://127.0.0.1:9/v1"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: ws-vllm, model: m}}]}}
"""
    )
    return path


def test_wake_sends_the_magic_packet(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        port = receiver.getsockname()[1]
        path = write_fabric(tmp_path, f'{{mac: "00:11:22:33:44:55", broadcast: 127.0.0.1, port: {port}}}')
        result = wake("ws", "--config", str(path))
        packet, _ = receiver.recvfrom(1024)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"woke ws: magic packet for 00:11:22:33:44:55 sent to 127.0.0.1:{port}",
        f"no gateway answers at {NO_GATEWAY}: sent from here, so no alert was raised",
    ]
    assert packet == b"\xff" * 6 + bytes.fromhex("001122334455") * 16


def test_wake_runs_the_command_and_says_so_in_json(tmp_path: Path) -> None:
    sink = tmp_path / "plug"
    path = write_fabric(tmp_path, f'{{command: "echo on > {sink}"}}')
    result = wake("ws", "--config", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "host": "ws",
        "woken": True,
        "how": "wake command run",
        "via": None,
        "alert": None,
        "note": f"no gateway answers at {NO_GATEWAY}: sent from here, so no alert was raised",
    }
    assert sink.read_text() == "on\n"


def test_a_failing_command_an_unknown_host_and_a_host_without_wake(tmp_path: Path) -> None:
    path = write_fabric(tmp_path, '{command: "echo no route to plug >&2; exit 4"}')
    failed = wake("ws", "--config", str(path))
    assert failed.returncode == 1
    assert "the wake command of ws exited with 4: no route to plug" in failed.stderr
    unknown = wake("nope", "--config", str(path))
    assert unknown.returncode == 2
    assert "no host named 'nope'" in unknown.stderr and "hosts: ws, rack" in unknown.stderr
    awake = wake("rack", "--config", str(path))
    assert awake.returncode == 2
    assert "host 'rack' has no wake: section" in awake.stderr
    for result in (failed, unknown, awake):
        assert "Traceback" not in result.stderr


def test_a_gateway_that_does_not_know_the_host_leaves_the_wake_to_the_command(
    tmp_path: Path, start_gateway: Callable[..., RunningGateway]
) -> None:
    gw = start_gateway(
        'backends: {b: {kind: vllm, url: "http://127.0.0.1:9/v1"}}\n'
        "roles: {chat: {kind: chat, targets: [{backend: b, model: m}]}}\n"
    )
    sink = tmp_path / "plug"
    path = write_fabric(tmp_path, f'{{command: "echo on > {sink}"}}')
    result = aifabric("wake", "ws", "--config", str(path), "--url", gw.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == (
        f"the gateway at {gw.url} has no host 'ws': sent from here, so no alert was raised"
    )
    assert sink.read_text() == "on\n"
