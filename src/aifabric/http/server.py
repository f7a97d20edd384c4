"""A small HTTP/1.1 server on asyncio + httptools: the gateway's listener.

Why not an ASGI server: the gateway's cost per request is what it adds to every call, and most of an
ASGI stack's time goes to layers a proxy does not need (scope dicts, receive/send message dicts,
middleware). This listener parses with httptools (llhttp, in C), hands the handler one `Request` with
the whole body, and writes a `Response` (one write) or a `StreamingResponse` (chunked, flow-controlled).
The comparison that chose it is in bench/STACKS.md.

What it does that a proxy needs: keep-alive and pipelining (answered in order), `Expect: 100-continue`,
a body-size limit answered with 413 before the body is read, a header-size limit (431), cancellation
of the handler when the client goes away (which closes the upstream request), and backpressure on
slow readers. HEAD, 204 and 304 answers carry no body; an HTTP/1.0 client gets a stream without
chunked framing, ended by closing. A handler's bug, even one raised mid-stream, ends the exchange
(a 500 while nothing was sent, else a closed connection), never a hung one.

What it does against a client that means harm or is simply broken, before anyone is authenticated:
a `head_hook` sees each request's head before its body is read (a refused key or an unknown route
is answered at once, and the body is never buffered); the bytes of bodies being buffered across all
connections are bounded (503 past `max_buffered_bytes`); a head must arrive within `head_timeout`
and a whole body within `body_timeout` of its head (408); answers queued for a client that does not
read stop the reading of its requests; and past `max_connections` a new connection gets 503 and is
closed, with one log line when the cap is reached.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import ssl as ssl_module
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools

from aifabric.http.transport import adopt

log = logging.getLogger("aifabric.http")

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


# The request path's records are dataclasses for their repr and eq, with `init=False` and an
# `__init__` of their own: the one `dataclass` writes is interpreted Python (built with exec) even in
# a module mypyc compiles, a few of them on every request; written out, mypyc compiles it.


@dataclass(slots=True, init=False)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    client: str = ""
    # What the server's head hook said of the request on its head, before the body (the gateway's
    # principal); None without a hook.
    # (Any, not object: mypyc, which compiles this module, cannot take `object` as a dataclass field.)
    auth: Any = None
    # What the handler forwarded for it (the gateway's ForwardRequest, whose waits its metrics subtract
    # from the request's time); None when nothing was.
    forwarded: Any = None

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        client: str = "",
        auth: Any = None,
        forwarded: Any = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client
        self.auth = auth
        self.forwarded = forwarded


@dataclass(slots=True, init=False)
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]]
    content_type: str

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.status = status
        self.body = body
        self.headers = [] if headers is None else headers
        self.content_type = content_type


@dataclass(slots=True, init=False)
class StreamingResponse:
    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[str, str]]
    content_type: str

    def __init__(
        self,
        status: int,
        chunks: AsyncIterator[bytes],
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "text/event-stream",
    ) -> None:
        self.status = status
        self.chunks = chunks
        self.headers = [] if headers is None else headers
        self.content_type = content_type


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]
# Called when the body limit is exceeded or the request cannot be parsed; returns the error response.
# (status, message, the request's path or "" when it is not known yet): the API behind a path may
# have its own error shape (the gateway answers Anthropic's on /v1/messages).
ErrorFactory = Callable[[int, str, str], Response]
# Called with the request (its body still empty) once its head is read: a Response refuses it (its
# body is dropped, never buffered); anything else is kept as `Request.auth` for the handler.
HeadHook = Callable[[Request], object]


def _plain_error(status: int, message: str, path: str = "") -> Response:
    return Response(status, message.encode() + b"\n", content_type="text/plain")


def _bodiless(status: int) -> bool:
    """Statuses whose responses never have a body, nor a length (RFC 9110 6.4.1)."""
    return status < 200 or status in {204, 304}


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_held",
        "_body_size",
        "_body_started",
        "_busy",
        "_client",
        "_closing",
        "_completed",
        "_discard",
        "_drain",
        "_head_bytes",
        "_head_parsed",
        "_head_sent",
        "_head_started",
        "_headers",
        "_held",
        "_in_body",
        "_in_head",
        "_parser",
        "_paused",
        "_pending",
        "_reading_paused",
        "_rejected",
        "_request",
        "_server",
        "_skip_body",
        "_task",
        "_transport",
        "_url",
        "_wake",
        "last_active",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._request: Request | None = None  # the one being read, built when its head ends
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._held = 0  # bytes of this connection's bodies counted in the server's `buffered`
        self._body_held = 0  # the part of `_held` that is the body being read
        self._skip_body = False  # the current request was refused: its body is dropped as it comes
        self._rejected = False
        self._in_head = False  # between a request's first byte and the end of its headers
        self._in_body = False  # between the end of a request's headers and the end of its body
        self._head_started = 0.0
        self._body_started = 0.0  # when the head ended: the whole body must arrive by body_timeout
        self._head_bytes = 0  # raw bytes read while in a head (a head that never ends)
        self._head_parsed = 0  # bytes of the head's URL and headers as parsed (a head read in one go)
        self._completed = False  # a request ended in the data being fed
        self._discard = False  # the request stream is unusable: ignore the rest, answer, close
        self._head_sent = False  # whether the current response's head went out
        # (request or ready answer, keep-alive, HTTP/1.0) of pipelined requests waiting their turn
        self._pending: collections.deque[tuple[Request | Response, bool, bool]] = collections.deque()
        self._reading_paused = False
        # One task per connection, not per request (a task's creation and end cost more than the
        # rest of a small request's dispatch): between requests it waits on `_wake` for the next.
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a request or an answer is in hand (the task is not waiting on `_wake`)
        self._wake: asyncio.Future[tuple[Request | Response, bool, bool]] | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._closing = False
        self._client = ""
        self.last_active = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = adopt(transport)
        server = self._server
        self.last_active = server.loop.time()
        if len(server.connections) >= server.max_connections:
            # Over the cap: a short answer and close, before reading anything (a crowd of slow or
            # idle clients cannot take every file descriptor of the process).
            self._discard = True
            server.cap_reached()
            self._write(server.error_factory(503, server.cap_message(), ""), keep_alive=False)
            if len(server.refusing) < max(8, server.max_connections // 8):
                # Lingering, so that the client's request bytes, arriving after our close, do not make
                # the kernel reset the connection and destroy the 503 before it is read; a few at a
                # time only (each holds a descriptor for a moment), the rest are closed at once.
                server.refusing.add(self)
                self._linger_close()
            else:
                self._drain_unread()  # a close with unread bytes is a reset that destroys the 503
                self.close()
            return
        peer = transport.get_extra_info("peername")
        self._client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server.connections.discard(self)
        self._server.refusing.discard(self)
        self._unhold(self._held)
        if self._task is not None and not self._task.done():
            # The client went away: cancelling the handler closes the upstream request with it (or
            # ends the task waiting for the next request).
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
            # A request asking to switch protocols is answered as plain HTTP (RFC 9110 7.8 lets a
            # server ignore Upgrade), then the connection closes: what follows its head is another
            # protocol's bytes, which must not be read as a next request (the answer would be an
            # unrequested 400 after the first one).
            if not self._discard:
                self._fail(_plain_error(400, "protocol upgrades are not supported"))
            return
        except httptools.HttpParserError as exc:
            if not self._discard:
                self._fail(self._server.error_factory(400, f"malformed HTTP request: {exc}", ""))
            return
        if self._in_head and not self._completed and not self._discard:
            # Still in a request's head, and no earlier request ended in `data`: all of it was head
            # bytes, which llhttp buffers until each header ends, so they are bounded here. (Behind a
            # pipelined request in the same read they are not counted: one read of slack; the parsed
            # size is checked again when the head ends.)
            self._head_bytes += len(data)
            if self._head_bytes > self._server.max_head_bytes:
                self._fail(self._head_too_large())

    def _head_too_large(self) -> Response:
        limit = self._server.max_head_bytes
        return self._server.error_factory(
            431, f"request headers are larger than the limit of {limit} bytes", ""
        )

    def _fail(self, error: Response) -> None:
        """The request stream cannot go on: answer `error` in turn, then close."""
        self._discard = True
        self._drop_body()
        self._in_head = self._in_body = False
        self._queue(error, keep_alive=False)

    def _refuse(self, error: Response) -> None:
        """Refuse the request being read (before or while its body arrives): its body is dropped as it
        comes, `error` is answered in turn and the connection closes (lingering, see _linger_close)."""
        self._skip_body = True
        if self._rejected:
            return
        self._rejected = True
        self._fail(error)

    def _drop_body(self) -> None:
        self._unhold(self._body_held)
        self._body_held = 0
        self._body = []

    def _unhold(self, size: int) -> None:
        size = min(size, self._held)
        if size > 0:
            self._held -= size
            self._server.buffered -= size

    def check_timeouts(self, now: float) -> None:
        """Called by the server's reaper: a head that takes too long, or a body that stalls, is 408."""
        if self._discard or self._reading_paused:
            return
        server = self._server
        if self._in_head and now - self._head_started > server.head_timeout:
            self._fail(
                server.error_factory(
                    408, f"the request head did not arrive within {server.head_timeout:g} s", ""
                )
            )
        elif self._in_body and now - self._body_started > server.body_timeout:
            # A deadline for the whole body, not for the gap between reads: a client trickling a
            # byte at a time would otherwise hold the connection (and its buffer) indefinitely.
            self._fail(
                self._error(
                    408, f"the request body did not arrive within {server.body_timeout:g} s of its head"
                )
            )

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
        self._in_body = False
        self._head_started = self.last_active
        self._head_bytes = 0
        self._head_parsed = 0
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._body_held = 0
        self._skip_body = False
        self._request = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_parsed += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_parsed += len(name) + len(value) + 4
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._discard:
            return
        server = self._server
        if self._head_parsed > server.max_head_bytes:
            self._refuse(self._head_too_large())
            return
        # Any: httptools' stubs say bytes where the URL has no such part and it gives None, which
        # code compiled by mypyc would refuse.
        url: Any = httptools.parse_url(self._url)
        headers = self._headers
        request = self._request = Request(
            self._parser.get_method().decode("latin-1"),
            url.path.decode("latin-1") if url.path else "/",
            url.query.decode("latin-1") if url.query else "",
            headers,
            b"",
            self._client,
        )
        if server.head_hook is not None:
            result = server.head_hook(request)
            if isinstance(result, Response):
                # Refused on the head (a missing key, an unknown route): the body is never buffered.
                length = headers.get("content-length")
                if (length is not None and length != "0") or "transfer-encoding" in headers:
                    self._refuse(result)  # a body is coming that nobody will read: answer, then close
                else:  # none: answered in turn, on a connection kept alive
                    self._skip_body = True
                    self._queue(
                        result, self._parser.should_keep_alive(), self._parser.get_http_version() == "1.0"
                    )
                return
            request.auth = result
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > server.max_body_bytes:
            # Answer now, before the client sends a body we would throw away, and close after it.
            self._refuse(self._too_large())
            return
        self._in_body = True
        self._body_started = self.last_active
        if (
            headers.get("expect", "").lower() == "100-continue"
            and self._transport is not None
            and not self._busy  # behind a response in progress it would land inside that one
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._skip_body:
            return
        size = len(body)
        self._body_size += size
        server = self._server
        if self._body_size > server.max_body_bytes:
            self._refuse(self._too_large())
            return
        self._held += size
        self._body_held += size
        server.buffered += size
        if server.buffered > server.max_buffered_bytes:
            # Many large bodies arriving at once: this one waits for another time rather than the
            # process growing without bound.
            self._refuse(
                self._error(
                    503, "the gateway is receiving too many large request bodies at once; retry shortly"
                )
            )
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._completed = True
        self._in_body = False
        request = self._request
        if self._discard or self._skip_body or request is None:
            return
        self._request = None
        keep_alive = self._parser.should_keep_alive()
        if self._parser.should_upgrade():
            # Answered as plain HTTP, then closed: see data_received.
            keep_alive = False
            self._discard = True
        request.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._body_held = 0  # now the request's: released when it is answered
        self._queue(request, keep_alive, self._parser.get_http_version() == "1.0")

    def _too_large(self) -> Response:
        limit = self._server.max_body_bytes
        return self._error(413, f"request body is larger than the limit of {limit} bytes")

    def _error(self, status: int, message: str) -> Response:
        """The listener's own error for the request being read, in the shape of its path's API."""
        request = self._request
        return self._server.error_factory(status, message, request.path if request is not None else "")

    # -- dispatch ---------------------------------------------------------------------------------
    def _queue(self, item: Request | Response, keep_alive: bool, legacy: bool = False) -> None:
        if not self._busy:
            self._busy = True
            wake, self._wake = self._wake, None
            if wake is not None and not wake.done():
                wake.set_result((item, keep_alive, legacy))  # the connection's task takes it
            else:
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
                if request is not None:
                    self._unhold(len(request.body))  # answered: its body is no longer ours to hold
                if not keep_alive or self._closing:
                    if self._discard:
                        self._linger_close()  # the client may still be sending what we refused
                    else:
                        self.close()
                    return
                if not self._pending:
                    self._busy = False
                    self._wake = wake = self._server.loop.create_future()
                    request = None
                    item, keep_alive, legacy = await wake
                    continue
                if self._paused:
                    # The client is not reading its answers: wait until it does before answering
                    # the next one (the queue stays full, so its requests are not read meanwhile).
                    self._drain = self._server.loop.create_future()
                    await self._drain
                item, keep_alive, legacy = self._pending.popleft()
                if self._reading_paused and len(self._pending) < _MAX_PIPELINED // 2:
                    self._reading_paused = False
                    # The time reading was paused is ours, not the client's: its deadlines restart.
                    self._head_started = self._body_started = self._server.loop.time()
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
            self._task = self._wake = None
            self._busy = False

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
        for k, v in headers:  # a loop, not extend(generator): no generator object per answer
            lines.append(f"{k}: {v}\r\n")
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
        error: BaseException | None = None
        try:
            await self._send_stream(response, keep_alive, head_only, legacy)
        except BaseException as exc:
            error = exc
        # The stream is closed here, after the `except` rather than in a `finally`: in code compiled by
        # mypyc, an `await` in a `finally` that an exception passes through leaves that exception set
        # for whatever the loop runs next (a later request on the connection saw it raised again;
        # mypyc/mypyc#1114). tests/test_native.py keeps such awaits out of every compiled module.
        aclose = getattr(response.chunks, "aclose", None)
        if aclose is not None:
            # Not contextlib.suppress: its three methods are interpreted calls, on every stream.
            try:  # noqa: SIM105
                await aclose()
            except Exception:  # a stream that failed already: its error is the one
                pass
        if error is not None:
            raise error

    async def _send_stream(
        self, response: StreamingResponse, keep_alive: bool, head_only: bool, legacy: bool
    ) -> None:
        chunks = response.chunks
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

    def close(self) -> None:
        """Close the connection now (an error, an idle keep-alive reaped, the server shutting down)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now, unsent answers included (shutdown: a client that never reads)."""
        if self._transport is not None:
            self._transport.abort()

    def _drain_unread(self) -> None:
        """Read and drop what the client has sent so far, without waiting (a crowd's head bytes)."""
        sock = self._transport.get_extra_info("socket") if self._transport is not None else None
        if sock is None:
            return
        with contextlib.suppress(OSError):  # BlockingIOError: nothing more for now
            while os.read(sock.fileno(), 65536):
                pass

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
        return not self._busy and not self._pending

    def reading(self) -> bool:
        """Within a request's head or body (its timeouts apply, not the idle one)."""
        return self._in_head or self._in_body


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
        max_buffered_bytes: int = 256 * 1024 * 1024,
        head_timeout: float = 10.0,
        body_timeout: float = 30.0,
        max_connections: int = 10_000,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.max_head_bytes = max_head_bytes
        self.error_factory = error_factory
        self.idle_timeout = idle_timeout
        self.log_exception = log_exception or (lambda request: None)
        self.head_hook = head_hook
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered = 0  # bytes of request bodies read and not yet answered, all connections
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.ssl = ssl
        self._at_cap = False
        self.connections: set[_Connection] = set()
        self.refusing: set[_Connection] = set()  # answered 503 at the cap, closing (lingering)
        self._server: asyncio.base_events.Server | None = None
        # Not `_unix`: mypyc names the C field `__unix`, a macro of C compilers on Unix.
        self._unix_listener: asyncio.base_events.Server | None = None
        self._unix_path = ""
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
            self._server = await self.loop.create_server(
                lambda: _Connection(self), sock=sock, backlog=2048, ssl=self.ssl
            )
        else:
            self._server = await self.loop.create_server(
                lambda: _Connection(self),
                host,
                port,
                reuse_port=reuse_port or None,
                backlog=2048,
                ssl=self.ssl,
            )
        self._reaper = self.loop.create_task(self._reap_idle())
        return self

    async def listen_unix(self, path: str) -> None:
        """Serve the same handler on a Unix socket too (after `start()`), for clients on this machine
        (no TCP stack on the hop). A socket file left by a process that died is replaced; the file is
        private to this user, and removed by `close()`."""
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # A directory another user can write to without the sticky bit (or owns) would let them swap
        # the socket for their own, and receive what clients send here: refuse it.
        info = os.stat(directory)
        shared = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
        if shared or info.st_uid not in (os.getuid(), 0):
            raise PermissionError(
                f"{directory} is writable by other users or belongs to another: not a safe place for "
                f"the socket {path} (use a directory of your own, e.g. under $XDG_RUNTIME_DIR)"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._unix_listener = await self.loop.create_unix_server(
            lambda: _Connection(self), path, backlog=2048
        )
        self._unix_path = path
        os.chmod(path, 0o600)

    @property
    def port(self) -> int:
        assert self._server is not None
        # Read as Any: uvloop's server gives a list where the stubs say tuple, which code compiled by
        # mypyc would refuse.
        sockets: Any = cast(Any, self._server).sockets
        assert sockets
        port: int = sockets[0].getsockname()[1]
        return port

    def cap_message(self) -> str:
        return f"the gateway has {self.max_connections} connections open (its limit); retry shortly"

    def cap_reached(self) -> None:
        """A connection was refused at the cap: said once in the log until the count falls again."""
        if not self._at_cap:
            self._at_cap = True
            log.warning(
                "connection limit reached: %d connections open (gateway.max_connections); new "
                "connections are answered 503 and closed until some close",
                self.max_connections,
            )

    async def _reap_idle(self) -> None:
        # One timer for all connections instead of one per request: keep-alive sockets idle past the
        # timeout are closed so a crowd of abandoned clients cannot hold file descriptors forever, and
        # a head or body that trickles in (slowloris) is cut off by its timeout.
        tick = max(0.05, min(self.idle_timeout, self.head_timeout, self.body_timeout, 5.0) / 4)
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            cutoff = now - self.idle_timeout
            for conn in list(self.connections):
                if conn.idle() and conn.last_active < cutoff and not conn.reading():
                    conn.close()
                else:
                    conn.check_timeouts(now)
            if self._at_cap and len(self.connections) < self.max_connections * 0.9:
                self._at_cap = False
                log.warning("connection count back to %d, under the limit", len(self.connections))

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, let in-flight requests finish for up to `grace` seconds, then close all."""
        if self._server is not None:
            self._server.close()
        if self._unix_listener is not None:
            self._unix_listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)
        if self._reaper is not None:
            self._reaper.cancel()
        loop = asyncio.get_running_loop()  # also for a server whose start() failed
        deadline = loop.time() + grace
        while any(not c.idle() for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()  # not close(): that would wait to flush answers a client never reads
        for server in (self._server, self._unix_listener):
            if server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 1.0)
