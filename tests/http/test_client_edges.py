"""The upstream client against backends that use the less common corners of HTTP/1.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from http_support import run

from aifabric.http.client import UpstreamClient
from aifabric.http.server import HttpServer, Request, Response

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_backend(script: Script) -> tuple[asyncio.Server, str]:
    """A backend written byte by byte: reads each request head, then runs `script`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_a_body_delimited_by_closing_the_connection_is_read_whole() -> None:
    # HTTP/1.0-style servers send no length and no chunking: the body ends when the connection does.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"a":')
        await writer.drain()
        writer.write(b"1}")
        await writer.drain()
        writer.close()
        raise ConnectionResetError  # one response per connection

    async def check() -> None:
        server, url = await raw_backend(script)
        client = UpstreamClient()
        resp = await client.request("GET", url + "/x", timeout=5)
        assert resp.status == 200
        assert await asyncio.wait_for(resp.read(), 5) == b'{"a":1}'
        # And streamed the same way.
        resp = await client.request("GET", url + "/x", timeout=5)
        chunks = [c async for c in resp.iter_bytes()]
        assert b"".join(chunks) == b'{"a":1}'
        await client.aclose()
        server.close()

    run(check())


def test_informational_responses_are_skipped_for_the_final_one() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n")
        await writer.drain()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-final: yes\r\n\r\nok")
        await writer.drain()

    async def check() -> None:
        server, url = await raw_backend(script)
        client = UpstreamClient()
        for _ in range(2):  # the connection stays usable after it
            resp = await client.request("POST", url + "/x", body=b"{}", timeout=5)
            assert resp.status == 200
            assert resp.headers.get("x-final") == "yes"
            assert "link" not in resp.headers
            assert await asyncio.wait_for(resp.read(), 5) == b"ok"
        await client.aclose()
        server.close()

    run(check())


def test_chunked_body_with_trailers_keeps_the_connection_usable() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
            b"5\r\nhello\r\n0\r\nx-checksum: 42\r\n\r\n"
        )
        await writer.drain()

    async def check() -> None:
        server, url = await raw_backend(script)
        client = UpstreamClient()
        for _ in range(3):
            resp = await client.request("GET", url + "/t", timeout=5)
            assert await asyncio.wait_for(resp.read(), 5) == b"hello"
        await client.aclose()
        server.close()

    run(check())


def test_a_large_answer_left_unread_does_not_stall_the_next_request() -> None:
    # A body bigger than the client's buffer limit pauses reading from the backend; when the whole
    # body had arrived by then, the connection went back to the pool still paused and the next
    # request on it never saw its answer (a timeout, held against a healthy backend).
    big = b"x" * (1 << 20) + b"y" * 4096

    async def handler(request: Request) -> Response:
        return Response(200, big if request.path == "/big" else b"small", content_type="text/plain")

    async def check() -> None:
        server = await HttpServer(handler).start("127.0.0.1", 0)
        client = UpstreamClient()
        url = f"http://127.0.0.1:{server.port}"
        resp = await client.request("GET", url + "/big", timeout=5)
        # The reader is busy elsewhere (a slow client of the gateway): the body lands meanwhile.
        async with asyncio.timeout(5):
            while not resp.complete:
                await asyncio.sleep(0.01)
        again = await client.request("GET", url + "/small", timeout=5)
        assert await asyncio.wait_for(again.read(), 5) == b"small"
        assert await resp.read() == big
        await client.aclose()
        await server.close(grace=0.1)

    run(check())


def test_a_backend_that_talks_on_an_idle_connection_does_not_poison_the_pool() -> None:
    # Some servers send a 408 on a keep-alive connection they are about to close.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    async def check() -> None:
        server, url = await raw_backend(script)
        client = UpstreamClient()
        resp = await client.request("GET", url + "/a", timeout=5)
        assert await resp.read() == b"ok"
        await asyncio.sleep(0.2)  # the stray 408 arrives on the idle pooled connection
        resp = await client.request("GET", url + "/b", timeout=5)
        assert resp.status == 200
        assert await asyncio.wait_for(resp.read(), 5) == b"ok"
        await client.aclose()
        server.close()

    run(check())


def test_a_backend_that_closes_after_each_answer_gets_a_new_connection_each_time() -> None:
    connections = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()
        raise ConnectionResetError  # this connection is done

    async def check() -> None:
        server, url = await raw_backend(script)
        client = UpstreamClient()
        for _ in range(3):
            resp = await client.request("POST", url + "/x", body=b"{}", timeout=5)
            assert await asyncio.wait_for(resp.read(), 5) == b"ok"
        assert len(connections) == 3
        await client.aclose()
        server.close()

    run(check())
