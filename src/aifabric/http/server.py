"""A small HTTP/1.1 server on asyncio + httptools: the gateway's listener.

Why not an ASGI server: the gateway's cost per request is what it adds to every call, and most of an
ASGI stack's time goes to layers a proxy does not need (scope dicts, receive/send message dicts,
middleware). This listener parses with httptools (llhttp, in C), hands the handler one `Request` with
the whole body, and writes a `Response` (one write) or a `StreamingResponse` (chunked, flow-controlled).
The comparison that chose it is in bench/STACKS.md.

What it does that a proxy needs: keep-alive and pipelining (answered in order), `Expect: 100-continue`,
a body-size limit answered with 413 before the body is read, a head hook that may refuse a request
on its head before its body is read (the gateway's key check), a header-size limit (431), cancellation
of the handler when the client goes away (which closes the upstream request), and backpressure on
slow readers. HEAD, 204 and 304 answers carry no body; an HTTP/1.0 client gets a stream without
chunked framing, ended by closing. A handler's bug, even one raised mid-stream, ends the exchange
(a 500 while nothing was sent, else a closed connection), never a hung one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httptools

from aifabric.http.transport import adopt

__all__ = ["HttpServer", "Request", "Response", "StreamingResponse"]

_REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_STATUS_LINES: dict[int, bytes] = {}
_LINGER = 2.0  # seconds a refused request's remaining bytes are read and dropped before closing
_MAX_PIPELINED = 16  # requests queued behind the one being answered before reading pauses


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n".encode("latin-1")
        _STATUS_LINES[status] = line
    return line


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    client: str = ""
    # What the server's head hook said of the request on its head, before the body (the gateway's
    # principal); None without a hook.
    auth: object = None


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


@dataclass(slots=True)
class StreamingResponse:
    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/event-stream"


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]
# Called when the body limit is exceeded or the request cannot be parsed; returns the error response.
# (status, message, the request's path or "" when it is not known yet): the API behind a path may
# have its own error shape (the gateway answers Anthropic's on /v1/messages).
ErrorFactory = Callable[[int, str, str], Response]
# Called with the request (its body still empty) once its head is read: a Response refuses it (its
# body is dropped, never buffered); anything else is kept as `Request.auth` for the handler.
HeadHook = Callable[["Request"], object]


def _plain_error(status: int, message: str, path: str = "") -> Response:
    return Response(status, message.encode() + b"\n", content_type="text/plain")


def _bodiless(status: int) -> bool:
    """Statuses whose responses never have a body, nor a length (RFC 9110 6.4.1)."""
    return status < 200 or status in {204, 304}


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_size",
        "_client",
        "_closing",
        "_completed",
        "_discard",
        "_drain",
        "_head_bytes",
        "_head_sent",
        "_head_size",
        "_headed",
        "_headers",
        "_in_head",
        "_parser",
        "_paused",
        "_pending",
        "_reading_paused",
        "_refused",
        "_rejected",
        "_server",
        "_task",
        "_too_large",
        "_transport",
        "_url",
        "last_active",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._too_large = False
        self._refused: Response | None = None  # what the head hook answered instead of the handler
        self._headed: Request | None = None  # the request the head hook saw, body to come
        self._rejected = False
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0
        self._head_size = 0  # the URL and headers of the request, as parsed (see on_headers_complete)
        self._completed = False  # a request ended in the data being fed
        self._discard = False  # the request stream is unusable: ignore the rest, answer, close
        self._head_sent = False  # whether the current response's head went out
        # (request or ready answer, keep-alive, HTTP/1.0) of pipelined requests waiting their turn
        self._pending: collections.deque[tuple[Request | Response, bool, bool]] = collections.deque()
        self._reading_paused = False
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._closing = False
        self._client = ""
        self.last_active = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = adopt(transport)
        peer = transport.get_extra_info("peername")
        self._client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self.last_active = self._server.loop.time()
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server.connections.discard(self)
        if self._task is not None and not self._task.done():
            # The client went away: cancelling the handler closes the upstream request with it.
            self._task.cancel()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client disconnected"))

    def data_received(self, data: bytes) -> None:
        self.last_active = self._server.loop.time()
        if self._discard:
            return
        self._completed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_plain_error(400, "protocol upgrades are not supported"))
            return
        except httptools.HttpParserError as exc:
            self._fail(self._server.error_factory(400, f"malformed HTTP request: {exc}", ""))
            return
        if self._in_head and not self._completed:
            # Still in a request's head, and no earlier request ended in `data`: all of it was head
            # bytes, which llhttp buffers until each header ends, so they are bounded here. (Behind a
            # pipelined request in the same read they are not counted: one read of slack.)
            self._head_bytes += len(data)
            if self._head_bytes > self._server.max_head_bytes:
                limit = self._server.max_head_bytes
                self._fail(
                    self._server.error_factory(
                        431, f"request headers are larger than the limit of {limit} bytes", ""
                    )
                )

    def _fail(self, error: Response) -> None:
        """The request stream cannot go on: answer `error` in turn, then close."""
        self._discard = True
        self._queue(error, keep_alive=False)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_size = 0
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._too_large = False
        self._refused = None
        self._headed = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_size > self._server.max_head_bytes:
            # A head that arrived whole in one read is not counted by data_received: counted here.
            limit = self._server.max_head_bytes
            self._refused = self._server.error_factory(
                431, f"request headers are larger than the limit of {limit} bytes", ""
            )
            self._fail(self._refused)
            return
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body_bytes:
            # Answer now, before the client sends a body we would throw away, and close after it.
            self._too_large = True
            self._reject_too_large()
            return
        hook = self._server.head_hook
        if hook is not None:
            self._headed = request = self._request(b"")
            result = hook(request)
            if isinstance(result, Response):
                self._refused = result
                length = self._headers.get("content-length")
                if (length is not None and length != "0") or "transfer-encoding" in self._headers:
                    # A body is coming that nobody will read: answer now and close after it (as for
                    # 413), so a client without a valid key never has its body buffered.
                    self._discard = True
                    self._queue(result, keep_alive=False)
                return  # without a body: answered in turn, on a connection kept alive
            request.auth = result
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self._transport is not None
            and self._task is None  # behind a response in progress it would land inside that one
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._too_large or self._refused is not None:
            return  # dropped: the request is answered without it
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            self._too_large = True
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._completed = True
        keep_alive = self._parser.should_keep_alive()
        if self._too_large:
            self._reject_too_large()
            return
        if self._refused is not None:
            if not self._discard:  # not answered already at the head
                self._queue(self._refused, keep_alive, self._parser.get_http_version() == "1.0")
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        legacy = self._parser.get_http_version() == "1.0"
        request = self._headed
        if request is None:
            request = self._request(body)
        else:
            request.body = body
        self._queue(request, keep_alive, legacy)

    def _request(self, body: bytes) -> Request:
        url = httptools.parse_url(self._url)
        path = url.path.decode("latin-1") if url.path else "/"
        query = url.query.decode("latin-1") if url.query else ""
        method = self._parser.get_method().decode("latin-1")
        return Request(method, path, query, self._headers, body, self._client)

    def _reject_too_large(self) -> None:
        if self._rejected:
            return
        self._rejected = True
        self._discard = True  # the rest of the body is read and dropped, not parsed
        limit = self._server.max_body_bytes
        message = f"request body is larger than the limit of {limit} bytes"
        try:
            path = self._request(b"").path
        except httptools.HttpParserInvalidURLError:
            path = ""
        error = self._server.error_factory(413, message, path)
        self._queue(error, keep_alive=False)

    # -- dispatch ---------------------------------------------------------------------------------
    def _queue(self, item: Request | Response, keep_alive: bool, legacy: bool = False) -> None:
        if self._task is None:
            self._task = self._server.loop.create_task(self._run(item, keep_alive, legacy))
        else:
            # Pipelined: answered in order once the current one is done. A client that pipelines
            # without reading stops being read from: the queue cannot grow without bound.
            self._pending.append((item, keep_alive, legacy))
            if (
                len(self._pending) >= _MAX_PIPELINED
                and not self._reading_paused
                and self._transport is not None
            ):
                self._reading_paused = True
                self._transport.pause_reading()

    async def _run(self, item: Request | Response, keep_alive: bool, legacy: bool) -> None:
        request: Request | None = None
        try:
            while True:
                self._head_sent = False
                response: Response | StreamingResponse
                if isinstance(item, Response):
                    request, response = None, item
                else:
                    request, response = item, await self._handle(item)
                head_only = request is not None and request.method == "HEAD"
                if isinstance(response, StreamingResponse):
                    # HTTP/1.0 has no chunked coding: its stream is ended by closing the connection.
                    keep_alive = keep_alive and not legacy
                    await self._write_stream(response, keep_alive, head_only, legacy)
                else:
                    self._write(response, keep_alive, head_only)
                if not keep_alive or self._closing:
                    if self._discard:
                        self._linger_close()  # the client may still be sending what we refused
                    else:
                        self.close()
                    return
                if not self._pending:
                    return
                item, keep_alive, legacy = self._pending.popleft()
                if self._reading_paused and len(self._pending) < _MAX_PIPELINED // 2:
                    self._reading_paused = False
                    if self._transport is not None and not self._closing:
                        self._transport.resume_reading()
        except (asyncio.CancelledError, ConnectionError):
            self.close()
        except Exception:
            # A bug past the handler (a stream that raised, a header that cannot be encoded): a 500
            # while nothing was sent, else the connection is cut; the client is never left waiting.
            if request is not None:
                self._server.log_exception(request)
            if not self._head_sent:
                path = request.path if request is not None else ""
                self._write(self._server.error_factory(500, "internal error in the gateway", path), False)
            self.close()
        finally:
            self._task = None

    async def _handle(self, request: Request) -> Response | StreamingResponse:
        try:
            return await self._server.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # the handler's own bug: answered, logged, never a hung connection
            self._server.log_exception(request)
            return self._server.error_factory(500, "internal error in the gateway", request.path)

    def _head(
        self, status: int, content_type: str, headers: list[tuple[str, str]], keep_alive: bool
    ) -> list[str]:
        lines = [f"content-type: {content_type}\r\n"] if content_type else []
        lines.extend(f"{k}: {v}\r\n" for k, v in headers)
        if not keep_alive:
            lines.append("connection: close\r\n")
        return lines

    def _write(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        if self._transport is None or self._closing:
            return
        status = response.status
        head = self._head(status, response.content_type, response.headers, keep_alive)
        body = response.body
        if _bodiless(status):
            head.append("\r\n")
            body = b""
        else:
            head.append(f"content-length: {len(body)}\r\n\r\n")
            if head_only:
                body = b""  # HEAD: the length a GET would get, no body
        data = _status_line(status) + "".join(head).encode("latin-1") + body
        self._head_sent = True
        self._transport.write(data)

    async def _write_stream(
        self, response: StreamingResponse, keep_alive: bool, head_only: bool = False, legacy: bool = False
    ) -> None:
        chunks = response.chunks
        try:
            if self._transport is None or self._closing:
                return
            status = response.status
            head = self._head(status, response.content_type, response.headers, keep_alive)
            if head_only or _bodiless(status):
                head.append("\r\n")
                self._head_sent = True
                self._transport.write(_status_line(status) + "".join(head).encode("latin-1"))
                return
            head.append("\r\n" if legacy else "transfer-encoding: chunked\r\n\r\n")
            # The head waits for the first chunk and goes out with it: one write (one packet) where
            # the first token is usually ready already (the forwarder waited for it before committing).
            pending = _status_line(status) + "".join(head).encode("latin-1")
            async for chunk in chunks:
                if self._closing:
                    raise ConnectionResetError("client disconnected")
                if chunk:
                    self._head_sent = True
                    if legacy:
                        self._transport.write(pending + chunk)
                    else:
                        self._transport.write(pending + b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    pending = b""
                    if self._paused:
                        loop = self._server.loop
                        self._drain = loop.create_future()
                        await self._drain
            if not self._closing:
                self._head_sent = True
                self._transport.write(pending if legacy else pending + b"0\r\n\r\n")
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def close(self) -> None:
        """Close the connection now (an error, an idle keep-alive reaped, the server shutting down)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _linger_close(self) -> None:
        """Close after an error answered while the client may still be sending (413, 431, 400).

        Closing at once with unread bytes makes the kernel send a reset, which can destroy the error
        reply before the client reads it: a client sending 40 MB would see "connection reset", not
        413. So the write side is shut (the client reads the reply, then end of stream), what the
        client still sends is read and dropped, and the connection closes within _LINGER seconds.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._discard = True
        if transport.can_write_eof():
            transport.write_eof()
            self._server.loop.call_later(_LINGER, self.close)
        else:
            transport.close()

    def idle(self) -> bool:
        return self._task is None and not self._pending


class HttpServer:
    """Serves one `Handler` on a socket; `start()` then `close()`."""

    # The loop `start()` runs on (its connections' clock); constructing a server needs no loop.
    loop: asyncio.AbstractEventLoop

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int = 32 * 1024 * 1024,
        max_head_bytes: int = 64 * 1024,
        error_factory: ErrorFactory = _plain_error,
        idle_timeout: float = 75.0,
        log_exception: Callable[[Request], None] | None = None,
        head_hook: HeadHook | None = None,
    ) -> None:
        self.handler = handler
        self.head_hook = head_hook
        self.max_body_bytes = max_body_bytes
        self.max_head_bytes = max_head_bytes
        self.error_factory = error_factory
        self.idle_timeout = idle_timeout
        self.log_exception = log_exception or (lambda request: None)
        self.connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
    ) -> HttpServer:
        self.loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await self.loop.create_server(lambda: _Connection(self), sock=sock, backlog=2048)
        else:
            self._server = await self.loop.create_server(
                lambda: _Connection(self), host, port, reuse_port=reuse_port or None, backlog=2048
            )
        self._reaper = self.loop.create_task(self._reap_idle())
        return self

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _reap_idle(self) -> None:
        # One timer for all connections instead of one per request: keep-alive sockets idle past the
        # timeout are closed so a crowd of abandoned clients cannot hold file descriptors forever.
        while True:
            await asyncio.sleep(min(self.idle_timeout, 5.0))
            cutoff = self.loop.time() - self.idle_timeout
            for conn in list(self.connections):
                if conn.idle() and conn.last_active < cutoff:
                    conn.close()

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, let in-flight requests finish for up to `grace` seconds, then close all."""
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        loop = asyncio.get_running_loop()  # also for a server whose start() failed
        deadline = loop.time() + grace
        while any(not c.idle() for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
