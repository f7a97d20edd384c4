"""What the listener and the upstream client do to every new connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import cast

__all__ = ["adopt"]


def adopt(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """The transport as an asyncio.Transport, with Nagle off: small writes (an SSE token, a short
    JSON answer) leave at once instead of waiting for the peer's delayed ACK."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # uvloop's transports implement asyncio.Transport without subclassing it.
    return cast(asyncio.Transport, transport)
