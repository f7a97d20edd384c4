"""The listener's bounds against clients that send slowly, too much, or too many connections: a head
or body that trickles is 408, bodies being buffered are bounded in total (503), a refused head's body
is never buffered, and past the connection cap a new connection gets 503 (issue 13)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from http_support import run as run_on_loop

from aifabric.http.server import HttpServer, Request, Response
from aifabric.testing.wait import eventually


async def handler(request: Request) -> Response:
    return Response(200, b'{"size":%d}' % len(request.body))


def refuse_private(request: Request) -> Response | None:
    """A head check like the gateway's: /private needs a key, seen before any body byte is read."""
    if request.path == "/private" and "authorization" not in request.headers:
        return Response(401, b'{"error":"key"}')
    return None


def serve(check, **limits: object) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        server = HttpServer(handler, head_hook=refuse_private, **limits)  # type: ignore[arg-type]
        await server.start("127.0.0.1", 0)
        try:
            await check(server)
        finally:
            await server.close(grace=0.5)

    run_on_loop(main())


async def read_all(reader: asyncio.StreamReader, limit: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.read(), limit)


def post_head(path: str, length: int) -> bytes:
    return b"POST %b HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), length)


def test_a_head_that_trickles_is_408_and_closed() -> None:
    async def check(server: HttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # and then nothing more
        reply = await read_all(reader)
        assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 0.3 s" in reply
        writer.close()

    serve(check, head_timeout=0.3)


def test_a_body_that_stalls_is_408_and_its_bytes_are_released() -> None:
    async def check(server: HttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post_head("/", 1000) + b"x" * 100)
        await eventually(lambda: server.buffered == 100, "the first bytes buffered")
        reply = await read_all(reader)
        assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 0.3 s" in reply
        assert server.buffered == 0
        writer.close()

    serve(check, body_timeout=0.3)


def test_a_body_that_trickles_is_408_at_its_deadline_not_kept_open_byte_by_byte() -> None:
    """One byte every 0.1 s never leaves a gap of `body_timeout`: the deadline counts from the head,
    so the 408 comes while the client is still trickling (it measured the gaps: kept open 15 s+)."""

    async def check(server: HttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post_head("/", 200))
        sent = 0
        answer = asyncio.ensure_future(read_all(reader, limit=30))
        while not answer.done() and sent < 200:  # 200 bytes would take 20 s at this pace
            writer.write(b"x")
            sent += 1
            await asyncio.wait([answer], timeout=0.1)
        if not answer.done():
            answer.cancel()
            raise AssertionError("the whole body was taken, byte by byte, with no 408")
        reply = answer.result()
        assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in reply, reply
        assert server.buffered == 0
        writer.close()

    serve(check, body_timeout=1.0)


def test_a_slowloris_crowd_is_cut_off_by_the_head_timeout() -> None:
    async def check(server: HttpServer) -> None:
        crowd = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(200)]
        for _, writer in crowd:
            writer.write(b"G")  # one byte of a head, then silence
        await eventually(lambda: len(server.connections) == 200, "the crowd accepted")
        await eventually(lambda: not server.connections, "every slow connection closed", limit=10)
        for _, writer in crowd:
            writer.close()

    serve(check, head_timeout=0.3)


def test_a_refused_head_is_answered_before_the_body_and_nothing_is_buffered() -> None:
    async def check(server: HttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post_head("/private", 31 * 1024 * 1024))  # the head only
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 401 ")  # at once, the body still unsent
        for _ in range(8):  # the client sends 8 MiB anyway: read and dropped, never held
            writer.write(b"x" * (1024 * 1024))
            assert server.buffered == 0
            await asyncio.sleep(0)
        writer.close()

    serve(check)


def test_bodies_buffered_at_once_are_bounded_in_total() -> None:
    async def check(server: HttpServer) -> None:
        r1, w1 = await asyncio.open_connection("127.0.0.1", server.port)
        w1.write(post_head("/", 900_000) + b"a" * 800_000)
        await eventually(lambda: server.buffered == 800_000, "the first body mostly buffered")
        r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
        w2.write(post_head("/", 400_000) + b"b" * 400_000)
        reply = await read_all(r2)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"too many large request bodies" in reply
        w1.write(b"a" * 100_000)  # the first one completes and is served
        first = await asyncio.wait_for(r1.readuntil(b'{"size":900000}'), 5)
        assert first.startswith(b"HTTP/1.1 200 ")
        await eventually(lambda: server.buffered == 0, "every body released once answered")
        w1.close()
        w2.close()

    serve(check, max_buffered_bytes=1_000_000)


def test_past_the_connection_cap_a_new_connection_gets_503_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aifabric.http")

    async def check(server: HttpServer) -> None:
        held = []
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b'{"size":0}')  # accepted and served, kept open
            held.append(writer)
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            reply = await read_all(reader)
            assert reply.startswith(b"HTTP/1.1 503 ") and b"5 connections open" in reply
            writer.close()
        lines = [r.getMessage() for r in caplog.records if "connection limit reached" in r.getMessage()]
        assert len(lines) == 1 and "gateway.max_connections" in lines[0]
        held.pop().close()
        await eventually(lambda: len(server.connections) == 4, "a held connection gone")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await read_all(reader)).startswith(b"HTTP/1.1 200 ")
        writer.close()
        for other in held:
            other.close()

    serve(check, max_connections=5)
