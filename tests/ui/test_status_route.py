"""/status and the page's files over HTTP, and the status view without sockets (no browser here)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from aifabric.config.load import load_config_text
from aifabric.gateway.app import Gateway
from aifabric.gateway.ui import UI_PATHS, status_view, ui_response
from aifabric.http.server import Response
from aifabric.testing.gateway import RunningGateway

ADMIN = {"authorization": "Bearer sk-admin-SECRET-3"}
FABRIC = """
gateway: {api_keys: ["sk-route-SECRET-1"], admin_keys: ["sk-admin-SECRET-3"], workers: 1}
hosts:
  wintermute: {address: 127.0.0.1, always_on: false}
backends:
  a: {kind: vllm, url: "http://127.0.0.1:9/v1", api_key: "sk-backend-SECRET-2"}
  b: {host: wintermute, kind: llamacpp, url: "http://127.0.0.1:8/v1"}
roles:
  chat-fast:
    kind: chat
    description: fast
    targets: [{backend: a, model: m1, weight: 3}, {backend: b, model: m2}]
    fallbacks: [chat-deep]
  chat-deep: {kind: chat, targets: [{backend: b, model: m2}]}
aliases:
  local/chat: chat-fast
  legacy: chat-fast
"""


@pytest.fixture
def gateway() -> Iterator[RunningGateway]:
    gw = RunningGateway(load_config_text(FABRIC, "/srv/fabric.yaml", environ={})).start()
    yield gw
    gw.stop()


def test_health_keeps_its_keys_and_status_adds_to_them(gateway: RunningGateway) -> None:
    health = httpx.get(gateway.url + "/health", headers=ADMIN).json()
    status = httpx.get(gateway.url + "/status", headers=ADMIN).json()
    assert set(health) == {"status", "exit_code", "counts", "backends"}  # the CLI and scripts read these
    assert set(status) == set(health) | {
        "targets",
        "gateway",
        "roles",
        "aliases",
        "requests",
        "tenancy",
        "usage",
    }
    assert status["tenancy"]["keys"]["reachable"] is True  # where keys live, without any key
    assert status["tenancy"]["limits"] == {"shared": "no", "share": 1.0}
    assert status["backends"] == health["backends"]
    assert status["gateway"]["source"] == "/srv/fabric.yaml" and status["gateway"]["name"] == "fabric.yaml"
    assert status["gateway"]["auth_required"] is True
    assert status["aliases"] == {"local/chat": "chat-fast", "legacy": "chat-fast"}
    fast = status["roles"]["chat-fast"]
    assert fast["aliases"] == ["local/chat", "legacy"] and fast["fallbacks"] == ["chat-deep"]
    assert [(t["backend"], t["model"], t["weight"]) for t in fast["targets"]] == [
        ("a", "m1", 3.0),
        ("b", "m2", 1.0),
    ]
    assert fast["available_targets"] == 2  # never probed: routable, as the data plane treats it
    assert set(status["targets"]) == {"chat-fast/a/m1", "chat-fast/b/m2", "chat-deep/b/m2"}
    for text in (
        httpx.get(gateway.url + "/status", headers=ADMIN).text,
        httpx.get(gateway.url + "/health", headers=ADMIN).text,
    ):
        assert "SECRET" not in text


def test_the_page_and_its_files_need_an_admin_key_and_are_self_contained(gateway: RunningGateway) -> None:
    for path in ("/ui", "/"):
        refused = httpx.get(gateway.url + path)  # keys are configured: the page is an operator view
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")  # a browser asks for the key
        assert httpx.get(gateway.url + path, auth=("admin", "sk-route-SECRET-1")).status_code == 403
        page = httpx.get(gateway.url + path, auth=("admin", "sk-admin-SECRET-3"))
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="ui/app.js" defer></script>' in page.text  # relative: works under a prefix
    slash = httpx.get(gateway.url + "/ui/", headers=ADMIN)
    assert (slash.status_code, slash.headers["location"]) == (302, "../ui")
    js = httpx.get(gateway.url + "/ui/app.js", headers=ADMIN)
    assert js.headers["content-type"].startswith("text/javascript")
    css = httpx.get(gateway.url + "/ui/style.css", headers=ADMIN)
    assert css.headers["content-type"].startswith("text/css")
    assert httpx.get(gateway.url + "/ui/nothing.js").status_code == 404
    assert httpx.post(gateway.url + "/ui", headers=ADMIN).status_code == 404
    # Works offline: nothing in the page refers to another origin (no CDN, no web font).
    for path in UI_PATHS - {"/ui/"}:
        body = ui_response(path).body.decode()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|@font-face", body), path


def test_requests_are_summarised_from_the_metrics_hooks() -> None:
    gw = Gateway(load_config_text(FABRIC, "fabric.yaml", environ={}), probe=False)
    for role, status in [("chat-fast", 200), ("chat-fast", 200), ("chat-fast", 502), ("", 404)]:
        gw.metrics.on_request(Response(status, headers=[("x-aifabric-requested-role", role)]), 0.01)
    summary = status_view(gw.table, gw.metrics, now=100.0)["requests"]
    assert summary == {
        "total": 4,
        "errors": 2,
        "by_role": {"(no role)": {"total": 1, "errors": 1}, "chat-fast": {"total": 3, "errors": 1}},
        "by_status": {"200": 2, "404": 1, "502": 1},
        "workers": 1,  # one process: its own counters
    }
    assert status_view(gw.table, None, now=100.0)["requests"]["total"] == 0
