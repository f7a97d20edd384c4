"""Sleeping hosts are woken by the requests that need them: a real gateway, fake engines, a UDP receiver.

The "host" is a fake vLLM that is stopped (connections refused: asleep, its host having always_on:
false) until the test starts it, as the machine would come up after its magic packet. Every packet goes
to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from load_support import StartGateway, ask, probe

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until
from cli_process import aifabric

MAC = "52:54:00:12:34:56"


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()


@pytest.fixture
def workstation() -> Iterator[FakeBackend]:
    """The sleeping machine's vLLM: its port is known, and refused until the test starts it."""
    backend = FakeBackend(kind="vllm", models=("qwen",)).start()
    backend.stop()
    yield backend
    backend.stop()


@pytest.fixture
def cloud() -> Iterator[FakeBackend]:
    with FakeBackend(kind="openai", models=("gpt-4o",)) as backend:
        yield backend


def fabric(ws: FakeBackend, wake: str, *, fallback: str = "", extra: str = "") -> str:
    """One role on the workstation's vLLM; with `fallback` (a URL), a cloud role it falls back to."""
    text = f"""\
hosts:
  ws: {{address: 127.0.0.1, always_on: false, wake: {wake}}}
backends:
  ws-vllm: {{host: ws, kind: vllm, url: "{ws.url}", health: {{unhealthy_threshold: 1}}}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: ws-vllm, model: qwen}}]
"""
    if fallback:
        text = text.replace("roles:\n", f'  cloud: {{kind: openai, url: "{fallback}"}}\nroles:\n')
        text += "    fallbacks: [openai/strong]\n"
        text += "  openai/strong: {kind: chat, targets: [{backend: cloud, model: gpt-4o}]}\n"
    return text + extra + "\n"


def alerts(gw: RunningGateway, key: str | None = None) -> dict[str, object]:
    request = urllib.request.Request(gw.url + "/alerts")
    if key is not None:
        request.add_header("authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        body: dict[str, object] = json.loads(resp.read())
    return body


def test_a_request_for_a_sleeping_host_is_served_by_the_fallback_and_wakes_the_host_once(
    start_gateway: StartGateway,
    receiver: socket.socket,
    workstation: FakeBackend,
    cloud: FakeBackend,
    tmp_path: Path,
) -> None:
    sink = tmp_path / "alerts.jsonl"
    wake = f'{{mac: "{MAC}", broadcast: 127.0.0.1, port: {receiver.getsockname()[1]}}}'
    extra = f'monitoring: {{sinks: [{{kind: file, target: "{sink}"}}]}}'
    gw = start_gateway(fabric(workstation, wake, fallback=cloud.url, extra=extra))
    probe(gw, "ws-vllm", "cloud")
    assert gw.state("ws-vllm") == "asleep"

    served = ask(gw)
    assert served["x-aifabric-backend"] == "cloud"  # not held: the fallback answers at once
    packet, _ = receiver.recvfrom(1024)
    assert packet == b"\xff" * 6 + bytes.fromhex(MAC.replace(":", "")) * 16
    assert ask(gw)["x-aifabric-backend"] == "cloud"  # still asleep: no second packet (rate-limited)
    receiver.settimeout(0.5)
    with pytest.raises(TimeoutError):
        receiver.recvfrom(1024)

    wait_until(lambda: sink.exists() and "host_woken" in sink.read_text(), "the INFO alert in the file sink")
    event = json.loads(sink.read_text().splitlines()[0])
    assert event["severity"] == "info"
    assert event["summary"].startswith("woke host ws for a request for role chat-fast: magic packet")
    recent = alerts(gw)["recent"]
    assert isinstance(recent, list) and recent[0]["rule"] == "host_woken"
    assert wakes(gw) == {"sent": 1, "failed": 0}  # Prometheus's AifabricHostWoken reads this

    workstation.start()  # the machine boots; the gateway probes it every second after a wake
    wait_until(lambda: gw.state("ws-vllm") == "up", "the woken host to be probed up", limit=20)
    assert ask(gw)["x-aifabric-backend"] == "ws-vllm"


def test_without_a_fallback_the_request_is_held_within_wake_wait_until_the_host_serves(
    start_gateway: StartGateway, workstation: FakeBackend, tmp_path: Path
) -> None:
    pressed = tmp_path / "power-button"
    wake = f'{{command: "touch {pressed}"}}'
    gw = start_gateway(fabric(workstation, wake, extra="retry: {wake_wait: 30s}"))
    probe(gw, "ws-vllm")
    result: dict[str, object] = {}

    def client() -> None:
        try:
            result["headers"] = ask(gw)
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=client)
    thread.start()
    wait_until(pressed.exists, "the wake command to run")
    workstation.start()
    thread.join(30)
    assert "error" not in result, result
    headers = result["headers"]
    assert isinstance(headers, dict) and headers["x-aifabric-backend"] == "ws-vllm"


def test_with_no_wake_wait_and_no_fallback_the_request_fails_at_once_but_the_host_is_woken(
    start_gateway: StartGateway, workstation: FakeBackend, tmp_path: Path
) -> None:
    pressed = tmp_path / "power-button"
    gw = start_gateway(fabric(workstation, f'{{command: "touch {pressed}"}}'))
    probe(gw, "ws-vllm")
    with pytest.raises(openai.APIStatusError) as info:
        ask(gw)
    assert info.value.status_code == 503
    wait_until(pressed.exists, "the wake command to run")


def wakes(gw: RunningGateway) -> dict[str, int]:
    """aifabric_host_wakes_total of the ws host on /metrics, by result."""
    with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith('aifabric_host_wakes_total{host="ws",'):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            found[result] = int(line.rsplit(" ", 1)[1])
    return found


def test_wakes_are_counted_on_metrics_by_host_and_result(
    start_gateway: StartGateway, workstation: FakeBackend, tmp_path: Path
) -> None:
    """What the Prometheus rules AifabricHostWoken / AifabricHostWakeFailed read: the counter exists at 0
    from the start, a failing wake command counts `failed`, a wake that was sent counts `sent`."""
    pressed = tmp_path / "power-button"
    command = f"touch {pressed}; exit 1"  # the smart plug does not answer: host_wake_failed
    gw = start_gateway(fabric(workstation, f'{{command: "{command}", min_interval: 1s}}'))
    assert wakes(gw) == {"sent": 0, "failed": 0}
    probe(gw, "ws-vllm")
    with pytest.raises(openai.APIStatusError):
        ask(gw)
    wait_until(lambda: wakes(gw) == {"sent": 0, "failed": 1}, "the failed wake counted")
    assert any(a["rule"] == "host_wake_failed" for a in alerts(gw)["recent"])  # type: ignore[union-attr]


def post(
    gw: RunningGateway, path: str, key: str | None = None, method: str = "POST"
) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(gw.url + path, method=method, data=b"" if method == "POST" else None)
    if key is not None:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=40) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_aifabric_wake_goes_through_the_gateway_which_sends_the_packet_and_raises_the_alert(
    start_gateway: StartGateway, receiver: socket.socket, workstation: FakeBackend, tmp_path: Path
) -> None:
    sink = tmp_path / "alerts.jsonl"
    wake = f'{{mac: "{MAC}", broadcast: 127.0.0.1, port: {receiver.getsockname()[1]}}}'
    extra = f'monitoring: {{sinks: [{{kind: file, target: "{sink}"}}]}}'
    gw = start_gateway(fabric(workstation, wake, extra=extra))
    probe(gw, "ws-vllm")
    # No --config: the gateway's fabric file is the one that counts.
    result = aifabric("wake", "ws", "--url", gw.url)
    assert result.returncode == 0, result.stderr
    packet, _ = receiver.recvfrom(1024)
    assert packet == b"\xff" * 6 + bytes.fromhex(MAC.replace(":", "")) * 16
    port = receiver.getsockname()[1]
    assert result.stdout.splitlines() == [
        f"woke ws: magic packet for {MAC} sent to 127.0.0.1:{port}",
        f"sent by the gateway at {gw.url}, which raised the INFO alert host_woken",
    ]
    wait_until(lambda: sink.exists() and "host_woken" in sink.read_text(), "the INFO alert in the file sink")
    event = json.loads(sink.read_text().splitlines()[0])
    assert event["severity"] == "info"
    assert event["summary"] == (
        f"woke host ws by hand (aifabric wake): magic packet for {MAC} sent to 127.0.0.1:{port}"
    )
    recent = alerts(gw)["recent"]
    assert isinstance(recent, list) and recent[0]["rule"] == "host_woken"
    # A request right after does not wake it again: the manual wake counts for the rate limit.
    with pytest.raises(openai.APIStatusError):
        ask(gw)
    receiver.settimeout(0.5)
    with pytest.raises(TimeoutError):
        receiver.recvfrom(1024)
    # The gateway probes the woken host every second, as after a request's wake.
    workstation.start()
    wait_until(lambda: gw.state("ws-vllm") == "up", "the woken host to be probed up", limit=20)


def test_the_wake_route_says_what_is_wrong_and_is_for_operators_only(
    start_gateway: StartGateway, workstation: FakeBackend
) -> None:
    failing = '{command: "echo plug offline >&2; exit 3"}'
    text = fabric(workstation, failing, extra='gateway: {api_keys: ["sk-app-1"], admin_keys: ["sk-admin-2"]}')
    gw = start_gateway(text.replace("backends:\n", "  rack: {address: 127.0.0.2}\nbackends:\n"))
    for key in (None, "sk-app-1"):  # no key, an application's key: refused, nothing run
        status, body = post(gw, "/admin/hosts/ws/wake", key)
        assert status in (401, 403), (key, status, body)
    assert alerts(gw, "sk-admin-2")["recent"] == []
    status, body = post(gw, "/admin/hosts/nope/wake", "sk-admin-2")
    assert (status, error(body)["code"]) == (404, "host_not_found")
    assert "Hosts: ws, rack" in error(body)["message"]
    status, body = post(gw, "/admin/hosts/rack/wake", "sk-admin-2")
    assert (status, error(body)["code"]) == (409, "no_wake_config")
    status, body = post(gw, "/admin/hosts/ws/wake", "sk-admin-2")
    assert (status, error(body)["code"]) == (502, "wake_failed")
    assert "exited with 3: plug offline" in error(body)["message"]
    assert alerts(gw, "sk-admin-2")["recent"][0]["rule"] == "host_wake_failed"  # type: ignore[index]
    status, body = post(gw, "/admin/hosts/ws/wake", "sk-admin-2", method="GET")
    assert status == 405
    # The CLI follows the gateway's answer: the wake failed there, so it fails here (not sent twice).
    failed = aifabric("wake", "ws", "--url", gw.url, env={"FABRIC_ADMIN_KEY": "sk-admin-2"})
    assert failed.returncode == 1 and "exited with 3: plug offline" in failed.stderr
    refused = aifabric("wake", "ws", "--url", gw.url, "--api-key", "sk-app-1")
    assert refused.returncode == 1 and "pass an admin key with --api-key" in refused.stderr
    for result in (failed, refused):
        assert "Traceback" not in result.stderr


def error(body: dict[str, object]) -> dict[str, str]:
    err = body["error"]
    assert isinstance(err, dict)
    return err
