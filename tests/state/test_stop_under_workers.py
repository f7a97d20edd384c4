"""A backend stopped on purpose (POST /admin/backends/NAME/stop) is shown stopped, with the operator's
reason, by every worker of `aifabric serve --workers 2` that shares the state (issue 8), whatever their
probes see; started again, probes take over in every worker.

The admin routes exist where a local supervisor runs the backend (`aifabric up`, here a gateway in this
process wired as `up` wires it); the workers are real forked processes sharing one real Redis with it.
Which worker answers is the kernel's choice (SO_REUSEPORT): each connection's owner is looked up in
/proc, and connections are opened until every worker has answered."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from state_support import Serve, connection_owner, serve_workers

from aifabric.config.load import load_config_text
from aifabric.local.supervisor import Supervisor
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until
from redis_support import RedisServer
from supervised import QUICK_RESTARTS, always_on_spec, attach, running_supervisor

WHY = "stopped by a drill/operator"

FABRIC = """
gateway: {{host: 127.0.0.1, port: 0}}
state: "{state}"
backends:
  chat: {{kind: vllm, url: "http://127.0.0.1:{port}/v1", health: {{interval: 200ms}}}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: chat, model: m}}]}}
"""


def views_by_worker(serve: Serve, workers: set[int]) -> dict[int, dict[str, Any]]:
    """The `chat` entry of /status as each worker answers it (one connection per try, until all have)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
        try:
            conn.request("GET", "/status")
            view = orjson.loads(conn.getresponse().read())
            owner = connection_owner(serve.port, conn.sock.getsockname()[1])
        finally:
            conn.close()
        if owner in workers:
            seen[owner] = view["backends"]["chat"]
        if seen.keys() == workers:
            return seen
    raise AssertionError(f"not every worker answered: {sorted(seen)} of {sorted(workers)}")


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Supervisor, int]]:
    port = free_port()
    with running_supervisor(
        [always_on_spec("chat", port, "m")], tmp_path / "logs", QUICK_RESTARTS
    ) as supervisor:
        yield supervisor, port


def test_an_operator_stop_holds_in_every_worker_until_started(
    redis_server: RedisServer, supervised: tuple[Supervisor, int], tmp_path: Path
) -> None:
    supervisor, port = supervised
    text = FABRIC.format(state=redis_server.url + "?interval=50ms", port=port)
    local = RunningGateway(load_config_text(text, "fabric.yaml", environ={}), probe=True).start()
    attach(local, supervisor)
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(text)
    serve = serve_workers(fabric_file, tmp_path / "run", 2)
    try:
        serve.wait_ready()
        workers = set(serve.workers())
        assert len(workers) == 2
        wait_until(
            lambda: all(v["state"] == "up" for v in views_by_worker(serve, workers).values()),
            "every worker sees chat up",
        )

        assert httpx.post(local.url + "/admin/backends/chat/stop").status_code == 202
        wait_until(lambda: "chat" not in supervisor.pids(), "the process to exit")
        wait_until(
            lambda: all(
                v["state"] == "down" and WHY in str(v.get("reason"))
                for v in views_by_worker(serve, workers).values()
            ),
            "every worker shows chat stopped by its operator",
        )
        # Probes of the stopped backend find it refusing connections (`failure: connect`): the stop
        # still names the state, in every worker, round after round.
        wait_until(
            lambda: all(v.get("failure") == "connect" for v in views_by_worker(serve, workers).values()),
            "every worker has seen a probe fail after the stop",
        )
        for pid, view in views_by_worker(serve, workers).items():
            assert view["state"] == "down" and WHY in str(view.get("reason")), (pid, view)

        assert httpx.post(local.url + "/admin/backends/chat/start").status_code == 202
        wait_until(
            lambda: all(v["state"] == "up" for v in views_by_worker(serve, workers).values()),
            "every worker sees chat up again, from the probes",
        )
    finally:
        serve.stop()
        local.stop()
