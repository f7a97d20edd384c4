"""Nagle is off on every connection the listener accepts (and the client opens).

With Nagle on, a small write that follows another one unacknowledged (an answer's body after its head,
the next SSE token) waits for the peer's delayed ACK: ~40 ms per keep-alive request on Linux, which
is what the stdlib server of the embeddings model once cost (issue 10: ~40 ms of 47). A plain answer
leaves in one write, but a stream's chunks cannot: for them Nagle off is the only defense. The listener
sets TCP_NODELAY itself (aifabric.http.transport.adopt) rather than trusting each event loop's default.
"""

from __future__ import annotations

import asyncio
import socket

from http_support import run as run_on_loop

from aifabric.http.server import HttpServer, Request, Response
from aifabric.http.transport import adopt
from aifabric.testing.wait import eventually


async def handler(request: Request) -> Response:
    return Response(200, b"{}")


def nodelay(sock: object) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))  # type: ignore[attr-defined]


def test_accepted_connections_have_nagle_off() -> None:
    async def main() -> None:
        server = await HttpServer(handler).start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            await eventually(lambda: len(server.connections) == 1, "the connection accepted")
            (conn,) = server.connections
            # The server's end of the connection, as the kernel has it.
            transport = conn._transport
            assert transport is not None
            assert nodelay(transport.get_extra_info("socket"))
            writer.close()
        finally:
            await server.close(grace=0.5)

    run_on_loop(main())


def test_adopt_turns_nagle_off_whatever_the_loop_did() -> None:
    # asyncio and uvloop both set TCP_NODELAY on new TCP transports today; adopt() does not rely on it.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        try:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            assert not nodelay(sock)
            assert adopt(transport) is transport
            assert nodelay(sock)
        finally:
            transport.close()
            server.close()

    run_on_loop(main())
