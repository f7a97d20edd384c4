"""`aifabric serve` as real processes: N workers on one port share one prober (local store); two
gateways on one Redis survive the leader being killed."""

from __future__ import annotations

import http.client
import json
import os
import signal
from pathlib import Path

import orjson
from state_support import Serve, connection_owner, fabric, models_on_each_connection, serve_workers

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.processes import alive
from aifabric.testing.wait import wait_until
from redis_support import RedisServer
from serve_process import group_members

CHAT = json.dumps({"model": "r", "messages": [{"role": "user", "content": "hi"}]})


def chat(conn: http.client.HTTPConnection) -> int:
    conn.request("POST", "/v1/chat/completions", body=CHAT, headers={"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def test_workers_share_one_prober_both_serve_and_sigterm_stops_all(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        fabric_file = tmp_path / "fabric.yaml"
        fabric_file.write_text(fabric(backend.url))
        serve = serve_workers(fabric_file, runtime)
        try:
            serve.wait_ready()
            workers = serve.workers()
            assert len(workers) == 2
            state_dir = runtime / "aifabric" / str(serve.port)
            health_file = state_dir / "health.json"
            versions: set[str] = set()

            def republished() -> bool:
                if health_file.exists():
                    versions.add(orjson.loads(health_file.read_bytes())["version"])
                return len(versions) >= 4

            wait_until(republished, "the lease holder republished health a few times")
            assert backend.count("/health") == 1, "one probe in all: the other worker follows"
            holder = (state_dir / "lease").read_text()
            assert any(f"/{pid}/" in holder for pid in workers), holder

            # 16 connections held open: the kernel spreads them over both workers, and each answers.
            conns = [http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10) for _ in range(16)]
            try:
                assert [chat(c) for c in conns] == [200] * 16
                owners = {connection_owner(serve.port, c.sock.getsockname()[1]) for c in conns}
                assert owners == set(workers)
            finally:
                for c in conns:
                    c.close()

            serve.signal(signal.SIGTERM)
            assert serve.proc.wait(15) == 0
            assert not any(alive(pid) for pid in workers), "no worker outlives the supervisor"
        finally:
            serve.stop()


def test_a_stop_while_a_dead_worker_waits_to_be_replaced_stops_everything(tmp_path: Path) -> None:
    """SIGTERM in the pause before a killed worker is replaced: no worker is started after it, and the
    supervisor exits with no process of its left (it used to start the replacement, which nobody
    stopped, and wait for it forever)."""
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        fabric_file = tmp_path / "fabric.yaml"
        fabric_file.write_text(fabric(backend.url))
        serve = serve_workers(fabric_file, tmp_path / "run")
        try:
            serve.wait_ready()
            victim = serve.workers()[0]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: any(f"(pid {victim}) exited" in line for line in serve.output), "noticed")
            serve.signal(signal.SIGTERM)  # the supervisor now pauses 0.5 s before replacing it
            assert serve.proc.wait(15) == 0, "".join(serve.output)
            assert group_members(serve.proc.pid) == [], "no worker outlives the supervisor"
        finally:
            serve.stop()


def test_a_replacement_worker_serves_the_fabric_file_as_reloaded(tmp_path: Path) -> None:
    """A worker that dies after a reload is replaced by one on the reloaded file, like its sibling,
    not on the file the supervisor read when it started."""
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        fabric_file = tmp_path / "fabric.yaml"
        fabric_file.write_text(fabric(backend.url))
        serve = serve_workers(fabric_file, tmp_path / "run")
        try:
            serve.wait_ready()
            fabric_file.write_text(fabric(backend.url) + "aliases: {local/chat: r}\n")
            serve.signal(signal.SIGHUP)
            wait_until(
                lambda: all(
                    ids == {"r", "local/chat"} for ids in models_on_each_connection(serve.port).values()
                ),
                "both workers serve the reloaded alias",
            )
            victim = serve.workers()[0]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: len(serve.workers()) == 2 and victim not in serve.workers(), "a new worker")
            workers = set(serve.workers())
            seen: dict[int | None, set[str]] = {}

            def both_answer() -> bool:
                seen.update(models_on_each_connection(serve.port))
                return workers <= seen.keys()

            wait_until(both_answer, "both workers, the new one too, answer")
            assert all(seen[pid] == {"r", "local/chat"} for pid in workers), seen
        finally:
            serve.stop()


def test_killed_leader_is_replaced_within_the_lease(tmp_path: Path, redis_server: RedisServer) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        fabric_file = tmp_path / "fabric.yaml"
        fabric_file.write_text(fabric(backend.url, state=redis_server.url + "?interval=100ms"))
        first, second = Serve(fabric_file), Serve(fabric_file)
        redis = redis_server.client()
        try:
            first.wait_ready()
            second.wait_ready()

            def holder_pid() -> int | None:
                holder = redis.get("aifabric:lease")
                return int(holder.decode().split("/")[1]) if isinstance(holder, bytes) else None

            wait_until(lambda: holder_pid() is not None, "a lease holder")
            leader = first if holder_pid() == first.proc.pid else second
            survivor = second if leader is first else first
            version = int(redis.get("aifabric:health:version") or 0)
            wait_until(lambda: int(redis.get("aifabric:health:version") or 0) >= version + 5, "5 rounds")
            assert backend.count("/health") == 1, "one probe in all: the other gateway follows"

            leader.proc.kill()  # no clean shutdown: the lease has to run out
            leader.proc.wait(10)
            wait_until(lambda: holder_pid() == survivor.proc.pid, "the survivor holds the lease")
            wait_until(lambda: backend.count("/health") == 2, "and probes")
            conn = http.client.HTTPConnection("127.0.0.1", survivor.port, timeout=10)
            try:
                assert chat(conn) == 200
            finally:
                conn.close()
        finally:
            redis.close()
            first.stop()
            second.stop()
