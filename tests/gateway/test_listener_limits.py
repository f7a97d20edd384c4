"""The listener's limits as an operator sets them: `gateway.head_timeout`, `gateway.body_timeout` and
`gateway.max_connections` read from a fabric file, and the cap the open-files limit allows."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aifabric.http.fdlimit import RESERVED_FILES, connection_cap
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until

Start = Callable[..., Any]


def fabric(url: str, gateway: str) -> str:
    return (
        f"gateway: {{{gateway}}}\n"
        f'backends:\n  b0: {{kind: vllm, url: "{url}"}}\n'
        "roles:\n  chat-fast: {kind: chat, targets: [{backend: b0, model: m1}]}\n"
    )


def reply_to(sock: socket.socket, timeout: float) -> bytes:
    """What the gateway answers on `sock` within `timeout` seconds, to its close."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(TimeoutError):
        while chunk := sock.recv(4096):
            data += chunk
    return data


def get(port: int, path: str = "/health/live") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return reply_to(sock, 10)


def test_head_and_body_timeouts_come_from_the_fabric_file(start_gateway: Start, fb: FakeBackend) -> None:
    # The defaults are 10 s and 30 s: an answer within 8 s shows the file's 1 s took effect.
    gw = start_gateway(fabric(fb.url, "head_timeout: 1s, body_timeout: 1s"))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHo")  # a head that stops coming
        assert reply_to(sock, 8).startswith(b"HTTP/1.1 408 ")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head + b'{"model":')  # a body that stalls
        assert reply_to(sock, 8).startswith(b"HTTP/1.1 408 ")


def test_max_connections_comes_from_the_fabric_file(
    start_gateway: Start, fb: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aifabric.http")
    gw = start_gateway(fabric(fb.url, "max_connections: 4"))
    server = gw.gateway.server
    held = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(4)]
    try:
        wait_until(lambda: len(server.connections) == 4, "the four connections accepted")
        refused = get(gw.port)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"4 connections open" in refused
        assert any("connection limit reached" in r.getMessage() for r in caplog.records)
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: get(gw.port).startswith(b"HTTP/1.1 200 "), "served again once the crowd left")


@contextlib.contextmanager
def serve_with_open_files(tmp_path: Path, url: str, limit: int) -> Iterator[tuple[int, Path]]:
    port = free_port()
    path = tmp_path / "fabric.yaml"
    path.write_text(fabric(url, f"port: {port}"))
    log_path = tmp_path / "serve.log"
    exe = Path(sys.executable).with_name("aifabric")
    with log_path.open("wb") as log_file:
        # prlimit (util-linux) sets the soft and hard limits both, as `ulimit -n` in a shell would.
        proc = subprocess.Popen(
            ["prlimit", f"--nofile={limit}:{limit}", str(exe), "serve", "--config", str(path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        def live() -> bool:
            assert proc.poll() is None, log_path.read_text()
            with contextlib.suppress(OSError):
                return get(port).startswith(b"HTTP/1.1 200 ")
            return False

        wait_until(live, "the gateway serving")
        yield port, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_crowd_past_the_open_files_limit_gets_503_not_resets(tmp_path: Path, fb: FakeBackend) -> None:
    """Under `ulimit -n 256` with the default max_connections (10,000), 400 one-byte connections ran
    the gateway out of descriptors: a normal request was reset and nothing was logged."""
    limit = 256
    cap = (limit - RESERVED_FILES) // 2
    with serve_with_open_files(tmp_path, fb.url, limit) as (port, log_path):
        crowd: list[socket.socket] = []
        try:
            for _ in range(400):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(b"G")  # one byte of a head, then nothing
                crowd.append(sock)
            # Past the cap every one is answered (not reset): the first `cap` may still be held.
            for sock in crowd[cap + 50 :]:
                assert reply_to(sock, 10).startswith(b"HTTP/1.1 503 ")
            during = get(port)
            assert during.startswith(b"HTTP/1.1 503 "), during[:200]
        finally:
            for sock in crowd:
                sock.close()
        wait_until(lambda: get(port).startswith(b"HTTP/1.1 200 "), "served again once the crowd left")
        log = log_path.read_text()
    assert f"the open-files limit ({limit}) allows {cap} connections" in log, log
    assert "connection limit reached" in log, log


def test_the_cap_is_lowered_only_when_the_descriptors_do_not_suffice() -> None:
    assert connection_cap(10_000, open_files=1_048_576) == 10_000
    assert connection_cap(10_000, open_files=1_024) == (1_024 - RESERVED_FILES) // 2
    assert connection_cap(100, open_files=1_024) == 100
    assert connection_cap(10_000, open_files=10) == 1
