"""A backend that sends its response headers and then nothing (a wedged GPU worker, a proxy holding
the body): the per-try timeout still applies until the first byte reaches the client, so the request
fails over instead of hanging."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from resilience_support import post_chat

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

StartGateway = Callable[..., RunningGateway]
MakeBackend = Callable[..., FakeBackend]


class StallingServer:
    """Answers every request with headers (and `body_prefix`), then holds the connection silent."""

    def __init__(self, head: bytes) -> None:
        self._head = head
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.recv(65536)  # the request (small enough to arrive in one read here)
            conn.sendall(self._head)
            self._conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self._sock.close()


STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
BODY_HEAD = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{"id": "x", '


@pytest.fixture
def stalling() -> Iterator[Callable[[bytes], StallingServer]]:
    made: list[StallingServer] = []

    def make(head: bytes) -> StallingServer:
        server = StallingServer(head)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def pair(stalled: str, healthy: str) -> str:
    return f"""
backends:
  stalled: {{kind: vllm, url: "{stalled}"}}
  healthy: {{kind: vllm, url: "{healthy}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: stalled, model: m1}}, {{backend: healthy, model: m1, weight: 0.001}}]
retry: {{deadline: 20s, try_timeout: 500ms}}
"""


def test_stream_with_headers_but_no_first_byte_fails_over(
    start_gateway: StartGateway, backend: MakeBackend, stalling: Callable[[bytes], StallingServer]
) -> None:
    gw = start_gateway(pair(stalling(STREAM_HEAD).url, backend().url))
    body = {"model": "chat-fast", "messages": [{"role": "user", "content": "go"}], "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert (r.headers["x-aifabric-backend"], r.headers["x-aifabric-attempts"]) == ("healthy", "2")
        assert "".join(r.iter_text()).endswith("data: [DONE]\n\n")


def test_body_that_stalls_after_the_headers_fails_over(
    start_gateway: StartGateway, backend: MakeBackend, stalling: Callable[[bytes], StallingServer]
) -> None:
    gw = start_gateway(pair(stalling(BODY_HEAD).url, backend().url))
    resp = post_chat(gw.url, timeout=10)
    assert resp.status_code == 200
    assert (resp.headers["x-aifabric-backend"], resp.headers["x-aifabric-attempts"]) == ("healthy", "2")
    assert resp.json()["choices"][0]["message"]["content"] == "[m1] hi"


ERROR_HEAD = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n"
    b'{"error": '
)


def test_an_error_whose_body_stalls_fails_over_within_the_try_timeout(
    start_gateway: StartGateway, backend: MakeBackend, stalling: Callable[[bytes], StallingServer]
) -> None:
    # A 500 whose body never comes: its body was read without a bound, and the request hung.
    gw = start_gateway(pair(stalling(ERROR_HEAD).url, backend().url))
    resp = post_chat(gw.url, timeout=10)
    assert resp.status_code == 200
    assert (resp.headers["x-aifabric-backend"], resp.headers["x-aifabric-attempts"]) == ("healthy", "2")
