"""Alerting end to end: a running gateway's monitor notifies real sinks (a webhook on 127.0.0.1, a
file, a command) once when a backend goes down and once when it is back; a sleeping workstation is
never more than INFO; `aifabric health --gateway URL` raises the CRITICAL a gateway cannot raise itself."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from aifabric.alerts.rules import AlertTracker, Severity, gateway_down
from aifabric.alerts.sinks import CommandSink, FileSink, Notifier
from aifabric.cli.console import Console
from aifabric.cli.main import main as cli_main
from aifabric.observability.logging import JsonFormatter
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until

StartGateway = Callable[..., RunningGateway]
MakeBackend = Callable[..., FakeBackend]

PROBES = "health: {interval: 100ms, timeout: 300ms, unhealthy_threshold: 1, healthy_threshold: 1}"


class Webhook:
    """An HTTP server on 127.0.0.1 that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[dict[str, Any]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def estate(embed: str, armitage: str, hook: str, min_severity: str = "info") -> str:
    return f"""
hosts:
  motoko:   {{address: 127.0.0.1, always_on: true}}
  armitage: {{address: 127.0.0.1, always_on: false}}
backends:
  motoko-embed:  {{host: motoko, kind: vllm, url: "{embed}", {PROBES}}}
  armitage-vllm: {{host: armitage, kind: vllm, url: "{armitage}", {PROBES}}}
roles:
  embeddings-general: {{kind: embeddings, targets: [{{backend: motoko-embed, model: bge}}]}}
  chat-fast: {{kind: chat, targets: [{{backend: armitage-vllm, model: qwen}}]}}
monitoring:
  interval: 200ms
  sinks: [{{kind: webhook, target: "{hook}", min_severity: {min_severity}}}]
"""


def alerts(gw: RunningGateway) -> dict[str, Any]:
    return httpx.get(gw.url + "/alerts", timeout=5).json()  # type: ignore[no-any-return]


def test_webhook_receives_firing_then_resolved_for_a_backend_that_goes_down_and_comes_back(
    start_gateway: StartGateway, backend: MakeBackend, webhook: Webhook
) -> None:
    embed, armitage = backend(models=("bge",)), backend(models=("qwen",))
    gw = start_gateway(estate(embed.url, armitage.url, webhook.url), probe=True)
    wait_until(lambda: alerts(gw)["evaluations"] >= 2, "the monitor to evaluate")
    assert webhook.received == []  # everything up: nothing to say
    embed.stop()
    wait_until(lambda: len(webhook.received) == 1, "the firing alert")
    fired = webhook.received[0]
    assert (fired["status"], fired["rule"], fired["subject"], fired["severity"]) == (
        "firing",
        "backend_down",
        "motoko-embed",
        "warning",
    )
    assert "aifabric health motoko-embed" in fired["fix"]
    [active] = alerts(gw)["active"]
    assert active["subject"] == "motoko-embed"
    evaluations = alerts(gw)["evaluations"]
    wait_until(lambda: alerts(gw)["evaluations"] >= evaluations + 3, "three more evaluations")
    assert len(webhook.received) == 1  # no repeat while it lasts
    embed.start()
    wait_until(lambda: len(webhook.received) == 2, "the resolved alert")
    resolved = webhook.received[1]
    assert (resolved["status"], resolved["subject"]) == ("resolved", "motoko-embed")
    assert resolved["duration_seconds"] > 0
    assert alerts(gw)["active"] == []
    # /alerts names the sink without the token in its URL path.
    assert all("T0KEN" not in s for s in alerts(gw)["sinks"])


def test_sleeping_workstation_raises_nothing_above_info(
    start_gateway: StartGateway, backend: MakeBackend, webhook: Webhook
) -> None:
    embed, armitage = backend(models=("bge",)), backend(models=("qwen",))
    gw = start_gateway(estate(embed.url, armitage.url, webhook.url, "warning"), probe=True)
    armitage.stop()  # the workstation is switched off for the night
    wait_until(lambda: bool(alerts(gw)["active"]), "the workstation's alert")
    [active] = alerts(gw)["active"]
    assert (active["rule"], active["severity"]) == ("workstation_down", "info")
    evaluations = alerts(gw)["evaluations"]
    wait_until(lambda: alerts(gw)["evaluations"] >= evaluations + 3, "three more evaluations")
    assert webhook.received == []  # the warning-level sink (a pager, say) was never woken


def test_file_and_command_sinks_receive_the_event_as_json(tmp_path: Path) -> None:
    log_file = tmp_path / "alerts" / "alerts.jsonl"
    out = tmp_path / "command-saw.json"
    script = (
        "import json, os, sys; e = json.load(sys.stdin); "
        "e['env_severity'] = os.environ['AIFABRIC_ALERT_SEVERITY']; "
        f"open({str(out)!r}, 'w').write(json.dumps(e))"
    )
    notifier = Notifier(
        [
            FileSink(str(log_file), Severity.INFO),
            CommandSink(f"{sys.executable} -c {json.dumps(script)}", Severity.CRITICAL),
        ]
    )
    tracker = AlertTracker()
    events = tracker.update([gateway_down("http://gw:8000", "refused")], now=1.0, timestamp=1e9)
    asyncio.run(notifier.notify(events))
    asyncio.run(notifier.notify(tracker.update([], now=61.0, timestamp=1e9 + 60)))
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [(x["status"], x["rule"]) for x in lines] == [
        ("firing", "gateway_down"),
        ("resolved", "gateway_down"),
    ]
    seen = json.loads(out.read_text())  # the last event the command got: the resolve
    assert (seen["status"], seen["severity"], seen["env_severity"]) == ("resolved", "critical", "critical")
    assert notifier.failures == 0


def test_a_failing_sink_is_counted_and_does_not_stop_the_others(tmp_path: Path) -> None:
    log_file = tmp_path / "alerts.jsonl"
    notifier = Notifier(
        [
            CommandSink(f"{sys.executable} -c 'raise SystemExit(3)'", Severity.INFO),
            FileSink(str(log_file), Severity.INFO),
        ]
    )
    events = AlertTracker().update([gateway_down("http://gw:8000", "refused")], now=1.0)
    asyncio.run(notifier.notify(events))
    assert notifier.failures == 1
    assert len(log_file.read_text().splitlines()) == 1


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli_main(list(argv), console=Console(out=out))
    return code, out.getvalue()


def test_health_gateway_flag_raises_critical_once_when_the_gateway_is_down_and_resolves(
    start_gateway: StartGateway, backend: MakeBackend, tmp_path: Path
) -> None:
    alerts_file = tmp_path / "alerts.jsonl"
    port = free_port()
    fabric = tmp_path / "fabric.yaml"
    embed = backend(models=("bge",))
    fabric.write_text(f"""
gateway: {{port: {port}}}
backends:
  motoko-embed: {{kind: vllm, url: "{embed.url}"}}
roles:
  embeddings-general: {{kind: embeddings, targets: [{{backend: motoko-embed, model: bge}}]}}
monitoring:
  log_dir: {tmp_path / "state"}
  sinks: [{{kind: file, target: "{alerts_file}", min_severity: critical}}]
""")
    url = f"http://127.0.0.1:{port}"
    # Nothing listens yet: the gateway is down. Run twice, like cron would: one notification.
    for _ in range(2):
        code, out = run_cli("health", "--gateway", url, "--config", str(fabric))
        assert code == 2
        assert "CRITICAL" in out and "is not answering" in out
    [fired] = [json.loads(x) for x in alerts_file.read_text().splitlines()]
    assert (fired["status"], fired["rule"], fired["severity"]) == ("firing", "gateway_down", "critical")
    # The gateway comes up: the next check resolves it (and notifies that once).
    start_gateway(fabric.read_text(), port=port)
    code, out = run_cli("health", "--gateway", url, "--config", str(fabric), "--json")
    assert code == 0
    view = json.loads(out)
    assert (view["up"], view["alerts"]) == (True, [])
    events = [json.loads(x)["status"] for x in alerts_file.read_text().splitlines()]
    assert events == ["firing", "resolved"]


def test_a_backend_refusing_the_gateways_key_fires_an_alert_naming_it_never_the_key(
    start_gateway: StartGateway, backend: MakeBackend, webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    """A cloud refuses the key the fabric file gives it, and quotes that key in its 401 (as OpenAI's
    "Incorrect API key provided: sk-..." does): backend_down fires, says the key was rejected and
    where to fix it, and neither the webhook, /alerts nor the log carries the key."""
    secret = "sk-cloud-SECRET-7b9d1f3a5c7e"
    refusal = {
        "error": {
            "message": f"Incorrect API key provided: {secret}",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    cloud = backend(
        kind="openai",
        models=("m1",),
        fail_first_n=10_000,
        fail_status=401,
        fail_body=refusal,
        fault_scope="all",  # probes too
    )
    gw = start_gateway(
        f"""
backends:
  cloud: {{kind: openai, url: "{cloud.url}", api_key: "${{CLOUD_KEY}}", {PROBES}}}
roles:
  chat-cloud: {{kind: chat, targets: [{{backend: cloud, model: m1}}]}}
monitoring:
  interval: 200ms
  sinks: [{{kind: webhook, target: "{webhook.url}"}}]
""",
        probe=True,
        environ={"CLOUD_KEY": secret},
    )
    wait_until(lambda: len(webhook.received) >= 1, "the firing alert")
    fired = webhook.received[0]
    assert (fired["status"], fired["rule"], fired["subject"]) == ("firing", "backend_down", "cloud")
    assert fired["summary"].startswith("backend cloud is down: api key rejected"), fired
    assert "backends.cloud.api_key" in fired["fix"], fired  # what to change, not "restart its server"
    shown = [json.dumps(webhook.received), httpx.get(gw.url + "/alerts").text]
    shown += [JsonFormatter().format(record) for record in caplog.records]  # as the log is written
    for text in shown:
        assert secret not in text and secret[:12] not in text, text
