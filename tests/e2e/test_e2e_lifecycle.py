"""`aifabric up` as an operator runs it: stops cleanly, names who holds a port, restarts a crashed backend."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from e2e_support import Up, free_port_block, port_is_free, port_outside

from aifabric.testing.net import free_port
from aifabric.testing.processes import alive

pytestmark = pytest.mark.e2e


def test_sigterm_stops_the_gateway_and_every_backend_with_no_orphans(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        up.wait_for("Ctrl-C stops everything.")
        pids = up.backend_pids()
        ports = [up.port, *up.backend_ports().values()]
        assert len(pids) == 3 and all(alive(pid) for pid in pids.values())
        assert not any(port_is_free(port) for port in ports)
        sock = Path(
            httpx.get(up.base_url + "/status", timeout=10).json()["backends"]["local-embed"]["unix_socket"]
        )
        assert sock.is_socket()
    finally:
        code = up.stop()
    assert code == 0, up.output
    assert "stopped" in up.output.splitlines()[-1]
    assert not sock.exists(), f"{sock} left behind"  # the embeddings server removes its socket
    for name, pid in pids.items():
        assert not alive(pid), f"{name} (pid {pid}) outlived aifabric up"
    for port in ports:
        assert port_is_free(port), f"port {port} still taken after aifabric up stopped"


def test_a_killed_backend_is_restarted_and_serves_again(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        up.wait_for("Ctrl-C stops everything.")
        first = up.backend_pids()["local-embed"]
        mark = len(up.output)
        os.kill(first, signal.SIGKILL)
        up.wait_for("local-embed: local-embed was killed by signal 9; restarting in 1 s", after=mark)
        up.wait_for("local-embed: restarted, ready in", after=mark)
        second = up.backend_pids()["local-embed"]
        assert second != first and alive(second)
        with openai.OpenAI(base_url=up.base_url + "/v1", api_key="unused", max_retries=3) as client:
            vector = client.embeddings.create(model="local/embed", input="back again").data[0].embedding
        assert len(vector) == 384
    finally:
        assert up.stop() == 0


def test_a_chat_engine_killed_mid_stream_ends_that_stream_and_its_role_fails_over(tmp_path: Path) -> None:
    up = Up(tmp_path)
    question = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    try:
        up.wait_for("Ctrl-C stops everything.")
        engine = up.backend_pids()["local-chat-fast"]
        mark = len(up.output)
        with openai.OpenAI(base_url=up.base_url + "/v1", api_key="unused", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="chat-fast",
                messages=question,
                max_tokens=1000,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            assert raw.headers["x-aifabric-backend"] == "local-chat-fast"
            received = 0
            # The gateway cannot retry what it has begun to send: the stream ends with an error
            # event (which the SDK raises) instead of hanging or stopping silently.
            with pytest.raises(openai.APIError, match="failed mid-stream"):
                for chunk in raw.parse():
                    received += bool(chunk.choices and chunk.choices[0].delta.content)
                    if received == 3:
                        os.kill(engine, signal.SIGKILL)
            assert received >= 3
            up.wait_for("local-chat-fast was killed by signal 9; restarting", after=mark)
            # While llama-server restarts, chat-fast's requests are answered by chat-deep's engine.
            reply = client.chat.completions.with_raw_response.create(
                model="chat-fast", messages=question, max_tokens=8
            )
            assert reply.headers["x-aifabric-backend"] == "local-chat-deep"
            assert reply.parse().choices[0].message.content
        up.wait_for("local-chat-fast: restarted, ready in", after=mark)
    finally:
        assert up.stop() == 0


def _run_up(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aifabric", "up", "--log-dir", str(tmp_path / "logs"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_local_port_already_in_use_is_reported_with_the_holders_pid(tmp_path: Path) -> None:
    base = free_port_block(3)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 2))  # where the embeddings backend would listen
        holder.listen()
        result = _run_up(tmp_path, "--port", str(port_outside(base, 3)), "--local-port-base", str(base))
    assert result.returncode == 1
    assert f"port {base + 2} on 127.0.0.1 is already in use by pid {os.getpid()} (" in result.stderr
    assert "--local-port-base" in result.stderr  # and how to get out of the way
    assert "loading: pid" not in result.stdout  # nothing was started
    for port in (base, base + 1):
        assert port_is_free(port)


def test_the_gateway_port_already_in_use_is_reported_with_the_holders_pid(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _run_up(tmp_path, "--port", str(port), "--local-port-base", str(free_port_block(3)))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()} (" in result.stderr
    assert "loading: pid" not in result.stdout


def embedder_fabric(tmp_path: Path) -> Path:
    """A fabric file whose one role is served by one local backend: the embeddings server."""
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(
        f"""
backends:
  my-embedder:
    kind: aifabric-embed
    local: {{engine: aifabric-embed, model: all-minilm-l6-v2-int8, port: {free_port()}, threads: 1}}
roles:
  search-embeddings:
    kind: embeddings
    targets: [{{backend: my-embedder, model: all-minilm-l6-v2-int8}}]
"""
    )
    return fabric


def test_a_fabric_file_can_declare_its_own_local_backend(tmp_path: Path) -> None:
    fabric = embedder_fabric(tmp_path)
    up = Up(tmp_path, "--config", str(fabric))
    try:
        up.wait_for("Ctrl-C stops everything.")
        assert up.backend_ports() == {"my-embedder": up.local_base}  # --local-port-base moved it
        with openai.OpenAI(base_url=up.base_url + "/v1", api_key="unused") as client:
            assert [m.id for m in client.models.list()] == ["search-embeddings"]
            result = client.embeddings.create(model="search-embeddings", input=["a", "b"])
        assert len(result.data) == 2
    finally:
        assert up.stop() == 0


def test_even_a_sigkilled_up_takes_its_backends_with_it(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        up.wait_for("Ctrl-C stops everything.")
        pids = up.backend_pids()
        up.proc.kill()  # no chance to clean up: the kernel's parent-death signal must do it
        up.proc.wait()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [name for name, pid in pids.items() if alive(pid)]
    finally:
        up.stop()
        for pid in up.backend_pids().values():  # only if the test failed: leave no orphans behind
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_a_request_during_a_restart_waits_for_the_backend_instead_of_failing(tmp_path: Path) -> None:
    # The runbook's "model loading: wait 30-60 s, retry", done by the gateway: a role whose only
    # backend is being restarted by `up` holds the request until the backend is back.
    fabric = embedder_fabric(tmp_path)
    up = Up(tmp_path, "--config", str(fabric))
    try:
        up.wait_for("Ctrl-C stops everything.")
        mark = len(up.output)
        os.kill(up.backend_pids()["my-embedder"], signal.SIGKILL)
        up.wait_for("my-embedder was killed by signal 9; restarting", after=mark)
        states = []
        with httpx.Client(base_url=up.base_url, timeout=30) as http:
            for _ in range(100):  # the gateway hears of the restart from the supervisor
                states.append(http.get("/health").json()["backends"]["my-embedder"]["state"])
                if states[-1] == "loading":
                    break
                time.sleep(0.02)
            assert states[-1] == "loading", states
            # No client-side retries: any failure would reach this call.
            r = http.post("/v1/embeddings", json={"model": "search-embeddings", "input": "still there?"})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"][0]["embedding"]) == 384
    finally:
        assert up.stop() == 0
