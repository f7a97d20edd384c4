"""The listener and the upstream client against each other and against raw sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from http_support import run

from aifabric.core import FailureClass
from aifabric.errors import UpstreamFailure
from aifabric.http.client import UpstreamClient
from aifabric.http.server import HttpServer, Request, Response, StreamingResponse
from aifabric.testing.wait import eventually

Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


async def echo(request: Request) -> Response:
    body = f"{request.method} {request.path}?{request.query} {len(request.body)}".encode()
    return Response(200, body, [("x-seen", request.headers.get("x-test", ""))], content_type="text/plain")


async def with_server(handler: Handler, fn: Callable[[HttpServer], Awaitable[None]], **kw: int) -> None:
    server = await HttpServer(handler, **kw).start("127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        await fn(server)
    finally:
        await server.close(grace=0.5)


async def raw_exchange(port: int, payload: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536) if not read_until_close else reader.read(), 5)
    writer.close()
    return data


def test_request_response_and_keep_alive_reuse() -> None:
    async def check(server: HttpServer) -> None:
        client = UpstreamClient()
        url = f"http://127.0.0.1:{server.port}/v1/x?a=1"
        for i in range(3):
            resp = await client.request("POST", url, [("x-test", f"t{i}")], b"hello", timeout=5)
            assert resp.status == 200
            assert resp.headers["x-seen"] == f"t{i}"
            assert await resp.read() == b"POST /v1/x?a=1 5"
        # Three requests, one connection: the pool kept it alive.
        assert len(server.connections) == 1
        await client.aclose()

    run(with_server(echo, check))


def test_streaming_response_arrives_chunk_by_chunk() -> None:
    release = asyncio.Event()

    async def handler(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            await release.wait()
            yield b"data: 2\n\n"

        return StreamingResponse(200, chunks())

    async def check(server: HttpServer) -> None:
        client = UpstreamClient()
        resp = await client.request("GET", f"http://127.0.0.1:{server.port}/s", timeout=5)
        assert resp.headers["content-type"] == "text/event-stream"
        it = resp.iter_bytes()
        # The first chunk is delivered while the handler is still blocked before the second.
        assert await asyncio.wait_for(it.__anext__(), 5) == b"data: 1\n\n"
        release.set()
        assert await it.__anext__() == b"data: 2\n\n"
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()
        await client.aclose()

    run(with_server(handler, check))


def test_body_over_limit_is_413_before_the_body_is_sent() -> None:
    async def check(server: HttpServer) -> None:
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        data = await raw_exchange(server.port, head)
        assert data.startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in data
        assert b"connection: close" in data

    run(with_server(echo, check, max_body_bytes=1000))


def test_chunked_request_body_over_limit_is_413() -> None:
    async def check(server: HttpServer) -> None:
        body = b"".join(b"%x\r\n%b\r\n" % (100, b"x" * 100) for _ in range(20)) + b"0\r\n\r\n"
        head = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = await raw_exchange(server.port, head + body)
        assert data.startswith(b"HTTP/1.1 413 ")

    run(with_server(echo, check, max_body_bytes=1000))


def test_expect_100_continue_is_answered() -> None:
    async def check(server: HttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert line == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"abc")
        rest = await asyncio.wait_for(reader.readuntil(b"POST /a? 3"), 5)
        assert rest.startswith(b"HTTP/1.1 200 OK")
        writer.close()

    run(with_server(echo, check))


def test_pipelined_requests_are_answered_in_order() -> None:
    async def handler(request: Request) -> Response:
        # The first request is the slowest: answers must still come back in request order.
        await asyncio.sleep(0.05 if request.path == "/first" else 0)
        return Response(200, request.path.encode(), content_type="text/plain")

    async def check(server: HttpServer) -> None:
        req = (
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = await raw_exchange(server.port, req)
        assert data.index(b"/first") < data.index(b"/second")

    run(with_server(handler, check))


def test_malformed_http_gets_400() -> None:
    async def check(server: HttpServer) -> None:
        data = await raw_exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 400 ")

    run(with_server(echo, check))


def test_client_disconnect_cancels_the_handler() -> None:
    cancelled = asyncio.Event()

    async def handler(request: Request) -> Response:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(200)

    async def check(server: HttpServer) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 5)

    run(with_server(handler, check))


def test_handler_bug_is_a_500_not_a_hang() -> None:
    async def handler(request: Request) -> Response:
        raise RuntimeError("boom")

    async def check(server: HttpServer) -> None:
        client = UpstreamClient()
        resp = await client.request("GET", f"http://127.0.0.1:{server.port}/", timeout=5)
        assert resp.status == 500
        assert b"boom" not in await resp.read()
        await client.aclose()

    run(with_server(handler, check))


def test_connect_refused_is_classified_connect() -> None:
    async def check() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = UpstreamClient()
        with pytest.raises(UpstreamFailure) as info:
            await client.request("GET", f"http://127.0.0.1:{port}/", timeout=2)
        assert info.value.failure is FailureClass.CONNECT
        await client.aclose()

    run(check())


def test_no_headers_in_time_is_classified_timeout() -> None:
    async def handler(request: Request) -> Response:
        await asyncio.sleep(30)
        return Response(200)

    async def check(server: HttpServer) -> None:
        client = UpstreamClient()
        with pytest.raises(UpstreamFailure) as info:
            await client.request("GET", f"http://127.0.0.1:{server.port}/", timeout=0.2)
        assert info.value.failure is FailureClass.TIMEOUT
        await client.aclose()

    run(with_server(handler, check))


def test_stale_pooled_connection_is_retried_on_a_fresh_one() -> None:
    async def check(server: HttpServer) -> None:
        client = UpstreamClient()
        url = f"http://127.0.0.1:{server.port}/a"
        assert (await client.request("GET", url, timeout=5)).status == 200
        # The server closes its idle keep-alive connections (as backends do after their idle timeout).
        for conn in list(server.connections):
            conn.close()
        await asyncio.sleep(0.05)
        resp = await client.request("GET", url, timeout=5)
        assert resp.status == 200
        await client.aclose()

    run(with_server(echo, check))


def test_backend_dying_mid_body_raises_connect_failure() -> None:
    async def check() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            writer.transport.abort()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        client = UpstreamClient()
        resp = await client.request("GET", f"http://127.0.0.1:{port}/", timeout=5)
        chunks = []
        with pytest.raises(UpstreamFailure) as info:
            async for chunk in resp.iter_bytes():
                chunks.append(chunk)
        assert chunks == [b"hello"]
        assert info.value.failure is FailureClass.CONNECT
        await client.aclose()
        srv.close()

    run(check())


def test_concurrent_requests_reusing_pooled_connections_all_complete() -> None:
    # Regression: a response that completed released its connection to the pool before its task
    # resumed; a second request took the connection, and the first task then cleared the second's
    # "headers arrived" future, leaving it waiting forever.
    async def check(server: HttpServer) -> None:
        client = UpstreamClient()
        url = f"http://127.0.0.1:{server.port}/r"

        async def worker() -> None:
            # No barrier between workers: a request starts while others' responses are landing.
            for _ in range(100):
                resp = await client.request("POST", url, body=b"x", timeout=5)
                assert await resp.read() == b"POST /r? 1"

        await asyncio.wait_for(asyncio.gather(*[worker() for _ in range(8)]), 30)
        await client.aclose()

    run(with_server(echo, check))


def test_a_slow_reader_pauses_the_backend_and_gets_every_byte() -> None:
    piece = bytes(range(256)) * 256  # 64 KiB

    async def handler(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(80):  # 5 MiB: well past the client's 1 MiB high-water mark
                yield piece

        return StreamingResponse(200, chunks(), content_type="application/octet-stream")

    async def check(server: HttpServer) -> None:
        client = UpstreamClient()
        resp = await client.request("GET", f"http://127.0.0.1:{server.port}/big", timeout=5)
        received = bytearray()
        async for chunk in resp.iter_bytes():
            received += chunk
            await asyncio.sleep(0.001)  # a client slower than the backend
        assert len(received) == 80 * len(piece)
        assert bytes(received[: len(piece)]) == piece and bytes(received[-len(piece) :]) == piece
        await client.aclose()

    run(with_server(handler, check))


def test_a_pooled_connection_idle_past_its_ttl_is_replaced_not_reused() -> None:
    # Backends on uvicorn close idle keep-alive connections after 5 s; reusing one at that moment
    # races the close. Past idle_ttl the client opens a fresh connection instead.
    async def check(server: HttpServer) -> None:
        client = UpstreamClient(idle_ttl=0.1)
        url = f"http://127.0.0.1:{server.port}/a"
        assert (await client.request("GET", url, timeout=5)).status == 200
        first = set(server.connections)
        assert (await client.request("GET", url, timeout=5)).status == 200
        assert set(server.connections) == first  # within the ttl: the same connection
        await asyncio.sleep(0.2)
        assert (await client.request("GET", url, timeout=5)).status == 200
        # The stale one is closed (the server sees its EOF when its loop gets to it), a new one served.
        await eventually(lambda: not (set(server.connections) & first), "the stale connection closed")
        assert set(server.connections)
        await client.aclose()

    run(with_server(echo, check))
