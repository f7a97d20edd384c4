"""`aifabric drill` where it cannot run, and how it picks its victim (the drill itself: tests/e2e)."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import pytest

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config_text
from aifabric.ops.drill import choose_backend
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port

SERVED = """
gateway: {{host: 127.0.0.1, port: 0}}
backends:
  remote: {{kind: vllm, url: "{url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: remote, model: m}}]}}
"""


def drill(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["drill", *args], Console(out, err))
    return code, out.getvalue(), err.getvalue()


def test_a_gateway_not_run_by_up_has_nothing_to_drill_and_is_left_alone() -> None:
    with FakeBackend(kind="vllm", models=("m",)) as fb:
        config = load_config_text(SERVED.format(url=fb.url), "fabric.yaml")
        running = RunningGateway(config, probe=True).start()  # what `aifabric serve` runs
        try:
            deadline = time.monotonic() + 30
            while httpx.get(running.url + "/status").json()["backends"]["remote"]["state"] != "up":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            code, out, _ = drill("--url", running.url, "--json")
        finally:
            running.stop()
    assert code == 2
    report = json.loads(out)
    assert report["steps"][0]["name"] == "baseline" and report["steps"][0]["ok"]
    assert (
        "this gateway has no /admin routes: the drill needs a gateway run by `aifabric up`"
        in report["aborted"]
    )
    assert report["restarted"] is False and report["exit_code"] == 2


def test_a_gateway_that_wants_a_key_is_said_so_not_called_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FABRIC_MASTER_KEY", raising=False)
    keyed = SERVED.replace("port: 0}}", "port: 0, api_keys: [k-secret], admin_keys: [a-secret]}}")
    admin = {"authorization": "Bearer a-secret"}
    with FakeBackend(kind="vllm", models=("m",)) as fb:
        running = RunningGateway(
            load_config_text(keyed.format(url=fb.url), "fabric.yaml"), probe=True
        ).start()
        try:
            deadline = time.monotonic() + 30
            while (
                httpx.get(running.url + "/status", headers=admin).json()["backends"]["remote"]["state"]
                != "up"
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            code, out, _ = drill("--url", running.url)
        finally:
            running.stop()
    assert code == 2
    assert "FAIL  baseline" in out and "need an admin key" in out and "pass it with --api-key" in out
    assert "not healthy" not in out


def test_an_unreachable_gateway_is_not_drilled() -> None:
    code, out, _ = drill("--url", f"http://127.0.0.1:{free_port()}", "--timeout", "5")
    assert code == 2
    assert "FAIL  baseline" in out and "does not answer" in out
    assert out.splitlines()[-1].startswith("drill not run: the gateway at http://127.0.0.1:")


def view(roles: dict[str, tuple[list[str], list[str]]]) -> dict[str, Any]:
    return {
        "roles": {
            name: {"targets": [{"backend": b} for b in backends], "fallbacks": fallbacks}
            for name, (backends, fallbacks) in roles.items()
        }
    }


def test_the_victim_is_a_local_backend_of_a_role_that_has_fallbacks() -> None:
    estate = view(
        {
            "embeddings": (["local-embed"], []),
            "chat-fast": (["cloud", "local-chat-fast"], ["chat-deep"]),
            "chat-deep": (["local-chat-deep"], []),
        }
    )
    local = ["local-chat-deep", "local-embed", "local-chat-fast"]
    assert choose_backend(estate, local) == "local-chat-fast"  # cloud is not local: the next target


def test_with_no_fallbacks_anywhere_the_first_local_backend_is_chosen() -> None:
    estate = view({"embeddings": (["local-embed"], []), "chat": (["local-chat"], [])})
    assert choose_backend(estate, ["local-chat", "local-embed"]) == "local-chat"
    assert choose_backend(estate, []) is None
