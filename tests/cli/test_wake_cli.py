"""`aifabric wake HOST`: a real process sends the magic packet to a UDP receiver on loopback, or runs the
command; a host it cannot wake is a usage error that says the fix."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from cli_process import aifabric


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
        result = aifabric("wake", "ws", "--config", str(path))
        packet, _ = receiver.recvfrom(1024)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"woke ws: magic packet for 00:11:22:33:44:55 sent to 127.0.0.1:{port}"
    assert packet == b"\xff" * 6 + bytes.fromhex("001122334455") * 16


def test_wake_runs_the_command_and_says_so_in_json(tmp_path: Path) -> None:
    sink = tmp_path / "plug"
    path = write_fabric(tmp_path, f'{{command: "echo on > {sink}"}}')
    result = aifabric("wake", "ws", "--config", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"host": "ws", "woken": True, "how": "wake command run"}
    assert sink.read_text() == "on\n"


def test_a_failing_command_an_unknown_host_and_a_host_without_wake(tmp_path: Path) -> None:
    path = write_fabric(tmp_path, '{command: "echo no route to plug >&2; exit 4"}')
    failed = aifabric("wake", "ws", "--config", str(path))
    assert failed.returncode == 1
    assert "the wake command of ws exited with 4: no route to plug" in failed.stderr
    unknown = aifabric("wake", "nope", "--config", str(path))
    assert unknown.returncode == 2
    assert "no host named 'nope'" in unknown.stderr and "hosts: ws, rack" in unknown.stderr
    awake = aifabric("wake", "rack", "--config", str(path))
    assert awake.returncode == 2
    assert "host 'rack' has no wake: section" in awake.stderr
    for result in (failed, unknown, awake):
        assert "Traceback" not in result.stderr
