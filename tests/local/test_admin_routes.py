"""The gateway's /admin/backends routes over a real supervisor: stop, start, who may call them, and 404
on a gateway with no supervisor (as `aifabric serve` runs it)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from local_support import fake_spec, wait_until

from aifabric.config.load import load_config_text
from aifabric.gateway.admin_routes import is_loopback
from aifabric.gateway.app import Gateway
from aifabric.http.server import Request
from aifabric.local.restart import RestartPolicy
from aifabric.local.supervisor import Supervisor
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port

FABRIC = """
gateway: {{host: 127.0.0.1, port: 0{keys}}}
backends:
  chat: {{kind: vllm, url: "http://127.0.0.1:{port}/v1"}}
  remote: {{kind: vllm, url: "http://127.0.0.1:9/v1"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: chat, model: m}}], fallbacks: [chat-remote]}}
  chat-remote: {{kind: chat, targets: [{{backend: remote, model: m}}]}}
"""
KEY = "sk-admin-test-0123456789"
API_KEY = "sk-app-test-0123456789"


def fabric(port: int, *, keys: bool = False) -> str:
    keys_text = ', api_keys: ["${API_KEY}"], admin_keys: ["${KEY}"]' if keys else ""
    return FABRIC.format(port=port, keys=keys_text)


class Estate:
    """A gateway in a thread with a supervisor of one fake local backend attached, as `up` wires them."""

    def __init__(self, tmp_path: Path, *, keys: bool = False) -> None:
        port = free_port()
        environ = {"KEY": KEY, "API_KEY": API_KEY}
        config = load_config_text(fabric(port, keys=keys), "fabric.yaml", environ=environ)
        self.supervisor = Supervisor(
            [fake_spec("chat", port)],
            log_dir=tmp_path / "logs",
            out=io.StringIO(),
            policy=RestartPolicy(base=0.1, max_delay=0.5),
        )
        self.supervisor.start()
        assert self.supervisor.wait_ready(timeout=60)
        self.running = RunningGateway(config).start()
        gateway = self.running.gateway
        assert gateway is not None
        self.gateway = gateway
        self.supervisor.on_state = gateway.local_backend_changed
        gateway.attach_local(self.supervisor)
        self.url = self.running.url

    def health(self, name: str) -> tuple[str, str]:
        health = self.gateway.table.healths[name]
        return str(health.state), health.reason

    def close(self) -> None:
        self.running.stop()
        self.supervisor.stop()


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[Estate]:
    e = Estate(tmp_path)
    yield e
    e.close()


def test_stop_takes_the_backend_down_in_the_gateway_and_start_brings_its_process_back(estate: Estate) -> None:
    first = estate.supervisor.pids()["chat"]
    reply = httpx.post(estate.url + "/admin/backends/chat/stop")
    assert reply.status_code == 202
    assert reply.json()["accepted"] is True and "stays down until" in reply.json()["message"]
    wait_until(lambda: estate.health("chat")[0] == "down", what="the gateway to mark it down")
    assert estate.health("chat") == ("down", "stopped by a drill/operator")
    status = httpx.get(estate.url + "/status").json()
    assert status["backends"]["chat"]["reason"] == "stopped by a drill/operator"
    wait_until(lambda: "chat" not in estate.supervisor.pids(), what="the process to exit")
    listed = httpx.get(estate.url + "/admin/backends").json()["backends"]
    stopped = {"process": "stopped", "pid": None, "state": "down", "reason": "stopped by a drill/operator"}
    assert listed == {"chat": stopped}

    assert httpx.post(estate.url + "/admin/backends/chat/start").status_code == 202
    wait_until(lambda: estate.supervisor.states()["chat"] == "ready", what="the backend to be ready again")
    assert estate.supervisor.pids()["chat"] != first
    # The gateway no longer holds it as stopped on purpose: a probe decides from here.
    assert estate.gateway.table.healths["chat"].stopped is None


def test_unknown_and_remote_backends_are_refused_with_openai_shaped_errors(estate: Estate) -> None:
    unknown = httpx.post(estate.url + "/admin/backends/nope/stop")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "backend_not_found"
    assert "No backend 'nope'" in unknown.json()["error"]["message"]
    remote = httpx.post(estate.url + "/admin/backends/remote/stop")
    assert remote.status_code == 400
    error = remote.json()["error"]
    assert error["code"] == "not_a_local_backend"
    assert "'remote' is not run by `aifabric up` (it is a remote backend)" in error["message"]
    assert "Local backends: chat" in error["message"]
    assert httpx.get(estate.url + "/admin/backends/chat/stop").status_code == 405
    assert estate.supervisor.states() == {"chat": "ready"}


def test_with_keys_the_routes_need_an_admin_key(tmp_path: Path) -> None:
    e = Estate(tmp_path, keys=True)
    try:
        missing = httpx.post(e.url + "/admin/backends/chat/stop")
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        wrong = httpx.post(e.url + "/admin/backends/chat/stop", headers={"authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401
        # An application's key is not an operator's: it cannot stop a backend.
        app = httpx.post(e.url + "/admin/backends/chat/stop", headers={"authorization": f"Bearer {API_KEY}"})
        assert app.status_code == 403
        assert app.json()["error"]["code"] == "admin_key_required"
        assert e.supervisor.states() == {"chat": "ready"}
        good = httpx.post(e.url + "/admin/backends/chat/stop", headers={"authorization": f"Bearer {KEY}"})
        assert good.status_code == 202
        wait_until(lambda: e.supervisor.states()["chat"] == "stopped", what="the stop")
    finally:
        e.close()


def _handle(gateway: Gateway, client: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """The gateway's handler with a request from `client` (a peer address no test socket can have)."""
    request = Request("POST", "/admin/backends/chat/stop", "", headers or {}, b"", client)

    async def call() -> tuple[int, bytes]:
        response = await gateway.handle(request)
        assert not hasattr(response, "chunks")
        return response.status, response.body  # type: ignore[union-attr]

    return asyncio.run(call())


def test_without_keys_a_client_on_another_machine_is_refused(estate: Estate) -> None:
    status, body = _handle(estate.gateway, "192.0.2.10:51234")
    assert status == 403
    assert b'"code":"admin_loopback_only"' in body and b"permission_error" in body
    assert estate.supervisor.states() == {"chat": "ready"}
    status, _ = _handle(estate.gateway, "[2001:db8::5]:51234")
    assert status == 403


def test_with_keys_a_client_on_another_machine_may_call_with_the_key(tmp_path: Path) -> None:
    e = Estate(tmp_path, keys=True)
    try:
        assert _handle(e.gateway, "192.0.2.10:51234")[0] == 401
        assert _handle(e.gateway, "192.0.2.10:51234", {"authorization": f"Bearer {KEY}"})[0] == 202
        wait_until(lambda: e.supervisor.states()["chat"] == "stopped", what="the stop")
    finally:
        e.close()


def test_a_gateway_with_no_supervisor_has_no_admin_routes() -> None:
    config = load_config_text(fabric(free_port()), "fabric.yaml")
    running = RunningGateway(config).start()  # what `aifabric serve` runs: nothing attached
    try:
        for method, path in (("POST", "/admin/backends/chat/stop"), ("GET", "/admin/backends")):
            reply = httpx.request(method, running.url + path)
            assert reply.status_code == 404
            assert reply.json()["error"]["code"] == "unknown_route"
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("client", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.8.9.10:5000", True),
        ("::1:5000", True),
        ("[::1]:5000", True),
        ("::ffff:127.0.0.1:5000", True),
        ("10.0.0.1:5000", False),
        ("::ffff:10.0.0.1:5000", False),
        ("2001:db8::1:5000", False),
        ("", False),
        ("localhost:5000", False),
    ],
)
def test_loopback_peers(client: str, loopback: bool) -> None:
    assert is_loopback(client) is loopback


def test_an_application_key_may_not_use_the_admin_routes_an_admin_scoped_one_may(tmp_path: Path) -> None:
    from aifabric.tenancy.keystore import SqliteKeyStore
    from aifabric.tenancy.manage import KeySpec, create_key

    store = SqliteKeyStore(tmp_path / "keys.db")
    app_key, _ = create_key(store, KeySpec("app"), 0.0)
    admin_key, _ = create_key(store, KeySpec("ops", admin=True), 0.0)
    e = Estate(tmp_path, keys=True)
    try:
        e.running.call(lambda: e.gateway.auth.update_records(store.load()))  # as the key watcher does
        refused = httpx.post(
            e.url + "/admin/backends/chat/stop", headers={"authorization": f"Bearer {app_key}"}
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "admin_key_required"
        assert e.supervisor.states() == {"chat": "ready"}
        allowed = httpx.post(
            e.url + "/admin/backends/chat/stop", headers={"authorization": f"Bearer {admin_key}"}
        )
        assert allowed.status_code == 202
        wait_until(lambda: e.supervisor.states()["chat"] == "stopped", what="the stop")
    finally:
        e.close()
        store.close()
