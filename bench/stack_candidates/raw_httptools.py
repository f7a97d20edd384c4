"""(c) a raw asyncio Protocol server with httptools' request parser + rawclient's pool, on uvloop."""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import orjson
import uvloop
from rawclient import UpstreamPool

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
STATUS_LINE = {200: b"HTTP/1.1 200 OK\r\n", 404: b"HTTP/1.1 404 Not Found\r\n"}


class Proxy(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body = []
        # Kept on the connection so the task is not garbage-collected mid-flight.
        self.task = asyncio.ensure_future(self.handle(self.url, body))

    async def handle(self, url: bytes, body: bytes) -> None:
        t = self.transport
        assert t is not None
        if url != b"/v1/chat/completions":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return
        payload = orjson.loads(body)
        payload["model"] = "bench-model"
        status, resp = await self.pool.request(
            self.pool.post_json(b"/v1/chat/completions", orjson.dumps(payload))
        )
        head = STATUS_LINE.get(status, b"HTTP/1.1 %d X\r\n" % status)
        t.write(head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(resp) + resp)


async def main(port: int, upstream_port: int) -> None:
    pool = UpstreamPool("127.0.0.1", upstream_port)
    server = await asyncio.get_running_loop().create_server(
        lambda: Proxy(pool), "127.0.0.1", port, backlog=2048
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    a = ap.parse_args()
    uvloop.run(main(a.port, a.upstream_port))
