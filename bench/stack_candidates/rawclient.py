"""A pooled keep-alive HTTP/1.1 upstream client on asyncio Protocols and httptools' response parser.

The shape the gateway's hot path could take: no per-request objects beyond one future, header
bytes built once, a connection reused as soon as its response is complete.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed the connection"))
        self.pool.discard(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        status = self.parser.get_status_code()
        body = b"".join(self.body)
        self.body = []
        waiter, self.waiter = self.waiter, None
        self.parser = httptools.HttpResponseParser(self)
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


class UpstreamPool:
    def __init__(self, host: str, port: int, max_idle: int = 256) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.idle: list[UpstreamConnection] = []

    def discard(self, conn: UpstreamConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port)
        return proto

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        conn = self.idle.pop() if self.idle else await self._connect()
        status, body = await conn.send(raw)
        if conn.keep_alive and len(self.idle) < self.max_idle:
            self.idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()
        return status, body

    def post_json(self, path: bytes, body: bytes) -> bytes:
        """The raw request bytes for POST path with a JSON body."""
        return (
            b"POST " + path + b" HTTP/1.1\r\nHost: " + self.host.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
