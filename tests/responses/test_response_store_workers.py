"""`aifabric serve --workers N` with `state: memory`: the workers keep stored responses in files, so a
conversation continues on whichever worker takes its next request."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
from pathlib import Path

from state_support import connection_owner, serve_workers

from aifabric.state.responses import FileResponseStore
from aifabric.testing.fake_backend import FakeBackend


def post(port: int, payload: dict[str, object]) -> tuple[int, dict[str, object], int | None]:
    """(status, body, pid of the worker that took the connection) of one request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    assert conn.sock is not None
    owner = connection_owner(port, conn.sock.getsockname()[1])
    conn.request("POST", "/v1/responses", json.dumps(payload), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    return reply.status, body, owner


def test_conversations_cross_workers(tmp_path: Path) -> None:
    with FakeBackend(kind="llama-cpp-python", models=("m",)) as fb:
        fabric_file = tmp_path / "fabric.yaml"
        fabric_file.write_text(
            f"""
backends:
  b: {{kind: llama-cpp-python, url: "{fb.url}"}}
roles:
  r: {{kind: chat, targets: [{{backend: b, model: m}}]}}
"""
        )
        runtime = tmp_path / "run"
        serve = serve_workers(fabric_file, runtime).wait_ready()
        try:
            status, body, owner = post(serve.port, {"model": "r", "input": "turn 0"})
            assert status == 200, body
            crossed = 0
            for turn in range(1, 80):
                payload = {"model": "r", "input": f"turn {turn}", "previous_response_id": body["id"]}
                status, body, next_owner = post(serve.port, payload)
                assert status == 200, body
                crossed += next_owner != owner
                owner = next_owner
                if crossed >= 2:
                    break
            assert crossed >= 2, "the kernel never handed a connection to the other worker"
            sent = fb.requests[-1].json["messages"]
            assert len(sent) == 2 * turn + 1  # every earlier turn and answer, whichever worker kept it
            stored = list((runtime / "aifabric" / str(serve.port) / "responses").iterdir())
            assert stored and all(p.stat().st_mode & 0o077 == 0 for p in stored)
        finally:
            serve.stop()


def test_file_store_expires_prunes_and_refuses_odd_ids(tmp_path: Path) -> None:
    offset = [0.0]
    store = FileResponseStore(tmp_path, ttl=60, max_entries=3, clock=lambda: time.time() + offset[0])

    async def main() -> None:
        await store.save("resp_a", b"a")
        assert await store.load("resp_a") == b"a"
        assert await store.load("../etc/passwd") is None
        await store.save("../escape", b"x")
        assert not (tmp_path.parent / "escape").exists()
        for name in "bcde":
            await store.save(f"resp_{name}", b"x" * 10)
            os.utime(tmp_path / f"resp_{name}", (time.time() + ord(name), time.time() + ord(name)))
        store.prune()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["resp_c", "resp_d", "resp_e"]
        offset[0] = 60 + 200
        assert await store.load("resp_e") is None
        assert not (tmp_path / "resp_e").exists()

    asyncio.run(main())
