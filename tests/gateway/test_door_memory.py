"""Memory before anyone is authenticated, and a request's fault that is not a backend's: the
gateway's RSS stays bounded for a client that pipelines without reading and for crowds sending huge
bodies without a key; a backend refusing the gateway's own key is a 502 naming the role; a request a
backend drops is not spread; the gateway's own EMFILE ejects nothing (issue 13)."""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

Start = Callable[..., Any]
KEY = "sk-door-memory-0123456789"
MIB = 1024 * 1024


def rss() -> int:
    """This process's resident memory in bytes (the gateway runs in one of its threads)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fabric(*urls: str, keys: bool = False, extra: str = "") -> str:
    gateway = f'gateway: {{api_keys: ["{KEY}"]}}\n' if keys else ""
    backends = "".join(f'  b{i}: {{kind: vllm, url: "{u}"}}\n' for i, u in enumerate(urls))
    targets = ", ".join(f"{{backend: b{i}, model: m1}}" for i in range(len(urls)))
    return f"{gateway}backends:\n{backends}roles:\n  chat-fast: {{kind: chat, targets: [{targets}]}}\n{extra}"


def run_all(clients: list[threading.Thread]) -> None:
    """Start every client, then wait for each: none may still be sending after 30 s."""
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(30)
        assert not thread.is_alive(), "a client still sending after 30 s: the gateway held its body"


def test_a_client_pipelining_without_reading_is_stopped_not_buffered(
    start_gateway: Start, fb: FakeBackend
) -> None:
    gw = start_gateway(fabric(fb.url))
    # 1 KiB a request: 50 MB in all, more than the kernel's socket buffers can hold for us.
    request = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"
    before = rss()
    sock = socket.create_connection(("127.0.0.1", gw.port))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(3)  # the gateway stops reading: our send blocks, and times out
        sent = 0
        with contextlib.suppress(TimeoutError):
            for _ in range(50_000):
                sock.sendall(request)
                sent += 1
        grown = rss() - before
        print(f"pipelined {sent} of 50000 requests unread; RSS {before / MIB:.0f} -> {rss() / MIB:.0f} MiB")
        assert sent < 50_000, "the gateway kept reading requests whose answers nobody reads"
        assert grown < 40 * MIB  # unbounded, answers queued for this client grew it by ~200 MB
    finally:
        sock.close()


def test_crowds_sending_huge_bodies_without_a_key_are_refused_on_the_head(
    start_gateway: Start, fb: FakeBackend
) -> None:
    gw = start_gateway(fabric(fb.url, keys=True))
    server = gw.gateway.server
    before = rss()

    def client() -> None:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (31 * MIB)
            )
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 401 "), reply[:100]  # before a byte of the body
            with contextlib.suppress(OSError):
                for _ in range(8):  # sent anyway: read and dropped, never held
                    sock.sendall(b"x" * MIB)

    threads = [threading.Thread(target=client) for _ in range(20)]
    run_all(threads)
    grown = rss() - before
    print(f"20 clients x 8 MiB without a key: RSS {before / MIB:.0f} -> {rss() / MIB:.0f} MiB")
    assert server is not None and server.buffered == 0
    assert grown < 60 * MIB  # buffered before the key check, it grew by ~670 MB
    assert fb.requests == []


def test_huge_bodies_sent_to_admin_routes_are_refused_on_the_head(
    start_gateway: Start, fb: FakeBackend
) -> None:
    """/admin/*: a caller without an admin key is 401 and a route `serve` does not have is 404, both
    before a byte of the body: 10 such 31 MiB posts grew the gateway by ~230 MB, for good."""
    admin_key = "sk-door-admin-0123456789"
    text = fabric(fb.url, keys=True).replace("api_keys:", f'admin_keys: ["{admin_key}"], api_keys:')
    gw = start_gateway(text)
    server = gw.gateway.server
    before = rss()
    wrong: list[bytes] = []

    def client(key: bytes, expected: bytes) -> None:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(
                b"POST /admin/backends/b0/stop HTTP/1.1\r\nHost: x\r\n%bContent-Length: %d\r\n\r\n"
                % (b"Authorization: Bearer " + key + b"\r\n" if key else b"", 31 * MIB)
            )
            try:
                reply = sock.recv(4096)  # before a byte of the body
            except TimeoutError:
                reply = b"no answer before the body"
            if not reply.startswith(b"HTTP/1.1 " + expected):
                wrong.append(reply[:200])
            with contextlib.suppress(OSError):
                for _ in range(8):  # sent anyway: read and dropped, never held
                    sock.sendall(b"x" * MIB)

    # Without a key: 401; with the admin key: 404, as `serve` runs no local backends to stop.
    callers = [(b"", b"401 "), (admin_key.encode(), b"404 ")] * 5
    threads = [threading.Thread(target=client, args=caller) for caller in callers]
    run_all(threads)
    grown = rss() - before
    print(f"10 clients x 8 MiB to /admin: RSS {before / MIB:.0f} -> {rss() / MIB:.0f} MiB")
    assert wrong == []
    assert server is not None and server.buffered == 0
    assert grown < 40 * MIB  # buffered before the checks, it grew by ~230 MB
    assert fb.requests == []


def test_a_backend_refusing_the_gateways_key_is_502_naming_the_role_not_the_clients_401(
    start_gateway: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="aifabric.gateway")
    with FakeBackend(kind="openai", models=("m1",), api_key="the-right-key") as cloud:
        text = fabric(cloud.url).replace("kind: vllm", 'kind: openai, api_key: "sk-wrong-1234567890"')
        gw = start_gateway(text)
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "upstream_auth_failed" and error["type"] == "upstream_error"
    assert "role 'chat-fast'" in error["message"] and "b0" in error["message"]
    assert "sk-wrong" not in r.text
    assert r.headers["x-aifabric-attempts"] == "1"  # not retried on the backend that refused us
    assert len(cloud.requests) == 1
    assert any("refused the gateway's credentials" in rec.getMessage() for rec in caplog.records)


def test_a_backend_refusing_our_key_falls_over_to_another_backend(
    start_gateway: Start, fb: FakeBackend
) -> None:
    with FakeBackend(kind="openai", models=("m1",), api_key="the-right-key") as cloud:
        text = fabric(cloud.url, fb.url).replace(
            f'b0: {{kind: vllm, url: "{cloud.url}"}}',
            f'b0: {{kind: openai, url: "{cloud.url}", api_key: "x-wrong"}}',
        )
        gw = start_gateway(text)
        chat = {"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(4):
            assert httpx.post(gw.url + "/v1/chat/completions", json=chat).status_code == 200
        assert len(cloud.requests) <= 4  # at most once per request, never retried on it


def test_a_request_two_backends_drop_is_not_spread_further_and_ejects_nothing(
    start_gateway: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aifabric.gateway")
    with (
        FakeBackend(kind="vllm", models=("m1",), crash_before_headers=True) as a,
        FakeBackend(kind="vllm", models=("m1",), crash_before_headers=True) as b,
        FakeBackend(kind="vllm", models=("m1",), crash_before_headers=True) as c,
    ):
        gw = start_gateway(fabric(a.url, b.url, c.url))
        chat = {"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]}
        ids = []
        for _ in range(4):
            r = httpx.post(gw.url + "/v1/chat/completions", json=chat)
            ids.append(r.headers["x-request-id"])
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_dropped_request"
            assert r.headers["x-aifabric-attempts"] == "2"
        assert len(a.requests) + len(b.requests) + len(c.requests) == 8
        targets = gw.gateway.table.routes["chat-fast"].targets
        assert all(t.failures == 0 and t.detector.available(time.monotonic()) for t in targets)
    # The operator hears of it: one line per backend (not per request), naming a request id.
    lines = [r.getMessage() for r in caplog.records if "the request is the cause" in r.getMessage()]
    named = {name for name in ("b0", "b1", "b2") for line in lines if line.startswith(f"backend {name} ")}
    assert len(lines) == len(named) >= 2, lines
    assert all("of role chat-fast" in line and "upstream_dropped_request" in line for line in lines)
    assert any(f"request {rid} " in lines[0] for rid in ids), (lines[0], ids)


def test_a_backend_that_drops_a_request_another_serves_is_named_once(
    start_gateway: Start, fb: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aifabric.gateway")
    with FakeBackend(kind="vllm", models=("m1",), crash_before_headers=True) as crashing:
        gw = start_gateway(fabric(crashing.url, fb.url))
        chat = {"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]}
        for n in range(100):  # until the balancer has sent two requests to b0 first
            r = httpx.post(gw.url + "/v1/chat/completions", json=chat, headers={"x-request-id": f"drop-{n}"})
            assert r.status_code == 200
            if len(crashing.requests) >= 2:
                break
        assert len(crashing.requests) >= 2
    lines = [r.getMessage() for r in caplog.records if "the backend is the cause" in r.getMessage()]
    assert len(lines) == 1, lines  # rate-limited: once a minute per backend
    assert lines[0].startswith("backend b0 closed the connection without answering request drop-")
    assert "which backend b1 then served" in lines[0]


@contextlib.contextmanager
def open_files_limit(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_gateways_own_emfile_is_a_503_and_ejects_no_backend(
    start_gateway: Start, fb: FakeBackend
) -> None:
    # One probe at the start, none during the test: a probe's socket closing would leave a free
    # descriptor the gateway's connect could take.
    quiet = fabric(fb.url).replace(f'url: "{fb.url}"', f'url: "{fb.url}", health: {{interval: 1h}}')
    gw = start_gateway(quiet)
    target = gw.gateway.table.routes["chat-fast"].targets[0]
    wait_until(lambda: target.detector.available(time.monotonic()), "the backend probed up")
    chat = b'{"model":"chat-fast","messages":[{"role":"user","content":"hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(chat), chat)
    )
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")  # accepted: its descriptor exists
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    replies = []
    fillers: list[int] = []

    def take_every_free_descriptor() -> None:
        # Under the lowered limit, open until the kernel refuses: every number below it is taken,
        # including a hole left by any socket closed since the last fill. Filling once from a
        # listing left such a hole on a CI run: the gateway's connect took it, the in-process
        # backend could not accept, and the request hung instead of being a 503.
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as error:
                assert error.errno == errno.EMFILE, error
                return

    gc.collect()
    gc.disable()
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    try:
        with open_files_limit(highest + 1):
            for _ in range(4):
                take_every_free_descriptor()
                sock.sendall(request)
                replies.append(sock.recv(65536))
    finally:
        for fd in fillers:
            os.close(fd)
        gc.enable()
        sock.close()
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 503 ") and b"gateway_out_of_resources" in reply, reply[:300]
    assert target.failures == 0 and target.detector.available(time.monotonic())
    wait_until(lambda: target.outstanding == 0, "the attempts settled")
    assert httpx.post(gw.url + "/v1/chat/completions", content=chat).status_code == 200
