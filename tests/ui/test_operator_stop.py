"""A backend stopped on purpose (`aifabric drill`, POST /admin/backends/NAME/stop) says so on every
surface an operator reads, whatever the probes see afterwards (issue 8): the status page (headless
Chromium), `aifabric status`, and the backend_down alert's text. A real local supervisor runs the
backend, as under `aifabric up`; the gateway probes it and evaluates its alert rules."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from ui_support import Node, dump_dom

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config_text
from aifabric.local.supervisor import Supervisor
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until
from supervised import QUICK_RESTARTS, always_on_spec, attach, running_supervisor

WHY = "stopped by a drill/operator"


@dataclass
class Stopped:
    url: str
    supervisor: Supervisor


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    """`chat` runs under a supervisor, is stopped through the admin route, and stays stopped."""
    port = free_port()
    logs = tmp_path_factory.mktemp("logs")
    with running_supervisor([always_on_spec("chat", port, "m")], logs, QUICK_RESTARTS) as supervisor:
        yield from _stopped(port, supervisor)


def _stopped(port: int, supervisor: Supervisor) -> Iterator[Stopped]:
    config = load_config_text(
        f"""
monitoring: {{interval: 200ms}}
backends:
  chat: {{kind: vllm, url: "http://127.0.0.1:{port}/v1", health: {{interval: 200ms}}}}
  remote: {{kind: vllm, url: "http://127.0.0.1:9/v1", health: {{interval: 1h}}}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: chat, model: m}}], fallbacks: [chat-remote]}}
  chat-remote: {{kind: chat, targets: [{{backend: remote, model: m}}]}}
""",
        "fabric.yaml",
        environ={},
    )
    running = RunningGateway(config, probe=True).start()
    gateway = running.gateway
    assert gateway is not None
    attach(running, supervisor)
    try:
        wait_until(lambda: str(gateway.table.healths["chat"].state) == "up", "chat probed up")
        assert httpx.post(running.url + "/admin/backends/chat/stop").status_code == 202
        wait_until(lambda: "chat" not in supervisor.pids(), "the process to exit")
        # Probes of the stopped backend now fail (connection refused): the stop still names the state.
        exited = time.monotonic()
        health = gateway.checker.healths["chat"]
        wait_until(lambda: (health.last_probe_at or 0) > exited, "a probe of the exited backend")
        assert health.failure is not None
        yield Stopped(running.url, supervisor)
    finally:
        running.stop()


def test_the_status_page_shows_the_stop_and_its_reason(stopped: Stopped) -> None:
    page: Node = dump_dom(stopped.url + "/ui")
    row = page.one("tr", data_backend="chat")
    badge = next(n for n in row.iter() if "data-state" in n.attrs)
    assert badge.attrs["data-state"] == "down" and badge.text.endswith("down")
    assert WHY in row.one("td", **{"class": "reason"}).text
    assert "Connection refused" not in row.text  # the probe's finding is the stop's consequence


def test_aifabric_status_says_the_backend_was_stopped_by_its_operator(stopped: Stopped) -> None:
    out, err = io.StringIO(), io.StringIO()
    main(["status", "--url", stopped.url], console=Console(out, err))
    lines = out.getvalue().splitlines()
    row = next(i for i, li in enumerate(lines) if li.startswith("chat ") and " down " in li)
    assert lines[row + 1].strip() == f"why: {WHY}", out.getvalue()


def test_the_backend_down_alert_says_it_was_stopped_and_how_to_start_it(stopped: Stopped) -> None:
    def active() -> list[dict[str, str]]:
        alerts: list[dict[str, str]] = httpx.get(stopped.url + "/alerts").json()["active"]
        return [a for a in alerts if a["rule"] == "backend_down" and a["subject"] == "chat"]

    wait_until(lambda: bool(active()), "the backend_down alert for chat")
    alert = active()[0]
    assert alert["summary"] == f"backend chat is down: {WHY}"
    assert "POST /admin/backends/chat/start" in alert["fix"]
    assert "restart the vllm server" not in alert["fix"]  # nothing to chase: it was stopped on purpose
