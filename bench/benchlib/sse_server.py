"""A chat upstream whose stream chunks arrive apart in time, for measuring time to first token.

Run as a script: `python sse_server.py --port P [--chunks N] [--interval-ms MS]`. POST
.../chat/completions answers a chunked text/event-stream: the first event at once, then one event
every interval, then [DONE]. GET /health and /v1/models answer like a vLLM server without a
model_path. A fixed-body nginx stream arrives in one piece, so a gateway that buffers would look
fine against it; against this one buffering shows as a time to first token near the total.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import cast

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib.upstream import models_body, stream_chunk

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _fixed(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class StreamProtocol(asyncio.Protocol):
    def __init__(self, chunks: int, interval_s: float) -> None:
        self.chunks = chunks
        self.interval_s = interval_s
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.pending: asyncio.Future[None] | None = None  # responses go out in request order

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only compatible with it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        previous = self.pending
        self.pending = asyncio.ensure_future(self.respond(method, self.url, previous))

    async def respond(self, method: bytes, url: bytes, previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            await previous
        t = self.transport
        if t is None or t.is_closing():
            return
        path = url.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            t.write(STREAM_HEAD + _chunk(stream_chunk(0, "The").encode()))
            for i in range(1, self.chunks):
                await asyncio.sleep(self.interval_s)
                if t.is_closing():
                    return
                t.write(_chunk(stream_chunk(i, f" w{i}").encode()))
            await asyncio.sleep(self.interval_s)
            t.write(
                _chunk(stream_chunk(self.chunks, None, "stop").encode())
                + _chunk(b"data: [DONE]\n\n")
                + b"0\r\n\r\n"
            )
        elif path == b"/health":
            t.write(_fixed("200 OK", b""))
        elif path == b"/v1/models":
            t.write(_fixed("200 OK", models_body().encode()))
        else:
            t.write(_fixed("404 Not Found", b'{"error":"not found"}'))


async def serve(port: int, chunks: int, interval_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: StreamProtocol(chunks, interval_ms / 1000), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--interval-ms", type=float, default=2.0)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.chunks, args.interval_ms))


if __name__ == "__main__":
    main()
