"""`aifabric status` against a real, probing gateway on fake backends, a stand-in gateway for the shapes
the real one cannot be made to answer (alerts, no /status), and a port where nothing listens."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config_text
from aifabric.ops.status import gateway_status
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue() + err.getvalue()


FABRIC = """\
hosts:
  motoko:     {{address: 127.0.0.1, always_on: true}}
  wintermute: {{address: 127.0.0.1, always_on: false}}
backends:
  motoko-embed:    {{host: motoko, kind: vllm, url: "{embed}", health: {{interval: 100ms, timeout: 1s}}}}
  wintermute-vllm: {{host: wintermute, kind: vllm, url: "{deep}", health: {{interval: 100ms, timeout: 1s}}}}
roles:
  chat-deep: {{kind: chat, targets: [{{backend: wintermute-vllm, model: deep-model}}]}}
  embeddings-general: {{kind: embeddings, targets: [{{backend: motoko-embed, model: embed-model}}]}}
"""


def wait_for_exit(url: str, code: int, limit: float = 15.0) -> None:
    """Until the gateway's own probes have brought its view to exit status `code`."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if gateway_status(url, timeout=2).exit_code == code:
            return
        time.sleep(0.05)
    raise AssertionError(f"gateway never reached exit {code}: {gateway_status(url).to_dict()}")


@pytest.fixture
def estate() -> Iterator[tuple[RunningGateway, FakeBackend, FakeBackend]]:
    with (
        FakeBackend(kind="vllm", models=("embed-model",)) as embed,
        FakeBackend(kind="vllm", models=("deep-model",)) as deep,
    ):
        config = load_config_text(FABRIC.format(embed=embed.url, deep=deep.url), "fabric.yaml", environ={})
        gw = RunningGateway(config, probe=True).start()
        try:
            yield gw, embed, deep
        finally:
            gw.stop()


def test_all_up_shows_backends_and_targets(estate: tuple[RunningGateway, FakeBackend, FakeBackend]) -> None:
    gw, _, _ = estate
    wait_for_exit(gw.url, 0)
    gw.openai().embeddings.create(model="embeddings-general", input="x")  # one request through a target
    code, text = run_cli("status", "--url", gw.url)
    assert code == 0, text
    assert f"gateway {gw.url} (fabric.yaml, pid " in text
    assert "motoko-embed" in text and "wintermute-vllm" in text
    assert "TARGET" in text and "ROUTABLE" in text
    target_line = next(line for line in text.splitlines() if "embed-model" in line and "yes" in line)
    assert target_line.split()[-2:] == ["1", "0"]  # one success, no failure
    assert "no active alerts" in text  # the gateway serves /alerts, and all is well
    assert text.rstrip().endswith("ok (exit 0)")

    code, text = run_cli("status", "--url", gw.url + "/v1", "--json")  # the client's base URL works too
    data = json.loads(text)
    assert code == 0 and data["reachable"] is True and data["route"] == "/status"
    assert data["view"]["backends"]["motoko-embed"]["state"] == "up"
    assert data["alerts"] == []  # served, and empty


def test_a_sleeping_workstation_is_attention_and_a_down_server_is_broken(
    estate: tuple[RunningGateway, FakeBackend, FakeBackend],
) -> None:
    gw, embed, deep = estate
    wait_for_exit(gw.url, 0)
    deep.stop()  # wintermute powered off: always_on false, so asleep, not an incident
    wait_for_exit(gw.url, 1)
    code, text = run_cli("status", "--url", gw.url)
    assert code == 1
    assert "asleep" in text and "always_on: false" in text

    embed.stop()  # motoko's embeddings server is always on: down
    wait_for_exit(gw.url, 2)
    code, text = run_cli("status", "--url", gw.url)
    assert code == 2
    row = next(line for line in text.splitlines() if line.startswith("motoko-embed"))
    assert "down" in row


def test_a_model_id_mismatch_is_broken(estate: tuple[RunningGateway, FakeBackend, FakeBackend]) -> None:
    gw, embed, _ = estate
    wait_for_exit(gw.url, 0)
    embed.set(models=("BAAI/other-model",))
    wait_for_exit(gw.url, 2)
    code, text = run_cli("status", "--url", gw.url)
    assert code == 2 and "MISMATCH" in text and "BAAI/other-model" in text


def test_an_unreachable_gateway_is_critical() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, text = run_cli("status", "--url", url)
    assert code == 3
    assert text.startswith(f"CRITICAL: gateway {url} is down: unreachable")
    assert "systemctl status aifabric" in text and "aifabric doctor" in text
    code, text = run_cli("status", "--url", url, "--json")
    data = json.loads(text)
    assert code == 3 and data["reachable"] is False and data["exit_code"] == 3


# -- a stand-in gateway: alerts, an old gateway without /status, a server that is not a gateway ---------

Routes = dict[str, Callable[[], tuple[int, Any]]]


@pytest.fixture
def stub() -> Iterator[Callable[[Routes], str]]:
    servers: list[ThreadingHTTPServer] = []

    def serve(routes: Routes) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, payload = routes.get(self.path, lambda: (404, {"error": "not found"}))()
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _view(state: str, exit_code: int) -> dict[str, Any]:
    entry = {"name": "motoko-embed", "state": state, "reason": "why not", "mismatches": [], "kind": "vllm"}
    return {
        "status": {0: "ok", 1: "attention", 2: "broken"}[exit_code],
        "exit_code": exit_code,
        "counts": {state: 1},
        "backends": {"motoko-embed": entry},
    }


def test_active_alerts_are_listed(stub: Callable[[Routes], str]) -> None:
    alerts = {
        "alerts": [
            {"severity": "warning", "name": "backend_down", "backend": "motoko-embed", "message": "down 5m"}
        ]
    }
    url = stub({"/status": lambda: (200, _view("down", 2)), "/alerts": lambda: (200, alerts)})
    code, text = run_cli("status", "--url", url)
    assert code == 2
    row = next(line for line in text.splitlines() if line.startswith("WARNING"))
    assert row.split()[:3] == ["WARNING", "backend_down", "motoko-embed"] and row.endswith("down 5m")

    url = stub({"/status": lambda: (200, _view("up", 0)), "/alerts": lambda: (200, [])})
    code, text = run_cli("status", "--url", url)
    assert code == 0 and "no active alerts" in text


def test_an_older_gateway_without_status_is_read_from_health(stub: Callable[[Routes], str]) -> None:
    url = stub({"/health": lambda: (200, _view("degraded", 1))})
    status = gateway_status(url)
    assert status.route == "/health" and status.exit_code == 1
    view = _view("loading", 1)
    del view["exit_code"]  # derived from the backends' states when absent
    assert gateway_status(stub({"/health": lambda: (200, view)})).exit_code == 1


def test_a_server_that_is_not_a_healthy_gateway_is_critical(stub: Callable[[Routes], str]) -> None:
    code, text = run_cli("status", "--url", stub({"/status": lambda: (500, {"error": "boom"})}))
    assert code == 3 and "answered HTTP 500 to GET /status" in text
    code, text = run_cli("status", "--url", stub({"/status": lambda: (200, b"<html>nginx</html>")}))
    assert code == 3 and "not aifabric's health view" in text


def test_limit_counts_late_for_rounds_are_shown_to_the_operator(stub: Callable[[Routes], str]) -> None:
    def view(late: int) -> dict[str, Any]:
        limits = {"shared": "redis", "reachable": True, "processes": 2, "share": 1.0, "error": ""}
        return {**_view("up", 0), "tenancy": {"limits": {**limits, "late_rounds": late}}}

    code, text = run_cli(
        "status", "--url", stub({"/status": lambda: (200, view(9)), "/alerts": lambda: (200, [])})
    )
    line = next(x for x in text.splitlines() if x.startswith("limits:"))
    assert "not published its counts on this one's rounds for 9 rounds" in line and "NTP" in line
    assert code == 0  # said, not a failure: every request is still answered
    code, text = run_cli(
        "status", "--url", stub({"/status": lambda: (200, view(2)), "/alerts": lambda: (200, [])})
    )
    assert code == 0 and "limits:" not in text  # a round or two late: waited for, nothing to say
