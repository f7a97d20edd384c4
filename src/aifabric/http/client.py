"""The upstream HTTP/1.1 client: pooled keep-alive connections per origin, on asyncio + httptools.

Why hand-written: the gateway forwards every request, so the client's cost is paid on the hot path;
general clients (httpx, aiohttp) spend most of it on features a proxy does not use. This one does
exactly: a pool of keep-alive connections per origin (TLS for cloud backends), a request written in
one `write`, the response parsed by llhttp, the body either read whole or iterated chunk by chunk
as it arrives (for SSE), and backpressure when the client reads slower than the backend writes.

I/O failures are translated here, once, into `UpstreamFailure` with a `FailureClass`:
refused/reset/DNS -> CONNECT, no response headers within the timeout -> TIMEOUT. The gateway's own
exhaustion (EMFILE, ENFILE, ENOMEM, ENOBUFS) is `OutOfResources` instead: never a backend's failure.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

from aifabric.core import FailureClass
from aifabric.errors import OutOfResources, UpstreamFailure
from aifabric.http.transport import adopt

log = logging.getLogger("aifabric.http")

__all__ = ["Origin", "UpstreamClient", "UpstreamResponse", "split_url"]

Origin = tuple[str, str, int]  # scheme, host, port

_OWN_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_HIGH_WATER = 1 << 20  # pause reading from a backend when this much is buffered for a slow client


def split_url(url: str) -> tuple[Origin, str]:
    """`http://h:8000/v1/models?x=1` -> (("http", "h", 8000), "/v1/models?x=1")."""
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return (scheme, parts.hostname or "", port), target


class _UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.paused = False
        self.response: UpstreamResponse | None = None
        self.headers_done: asyncio.Future[None] | None = None
        # Per response: an informational (1xx) head precedes the real one; a body with neither a
        # length nor chunking ends when the connection closes.
        self.interim = False
        self.until_close = False

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = adopt(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        response = self.response
        if response is None:
            return
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_exception(
                UpstreamFailure(
                    FailureClass.CONNECT,
                    "the backend closed the connection without answering",
                    request_suspect=True,
                )
            )
        elif self.until_close and exc is None:
            # A close-delimited body (no length, no chunking) ends with the connection; llhttp is
            # never told about the end of input, so the message is completed here.
            self.response = None
            response._finish()
        elif not response.complete:
            response._fail(UpstreamFailure(FailureClass.CONNECT, "connection closed mid-response"))

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            # Bytes on an idle pooled connection (a server's 408 before it closes): not ours to
            # parse, and the connection can no longer be trusted with a request.
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            failure = UpstreamFailure(FailureClass.UPSTREAM_5XX, f"malformed HTTP response: {exc}")
            if self.headers_done is not None and not self.headers_done.done():
                self.headers_done.set_exception(failure)
            elif self.response is not None:
                self.response._fail(failure)
            self.abort()

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if status < 200:
            # 100 Continue, 103 Early Hints: a head before the response, not the response.
            self.interim = True
            response.raw_headers.clear()
            return
        response.status = status
        self.until_close = (
            status not in (204, 304)
            and "content-length" not in response.headers
            and "chunked" not in response.headers.get("transfer-encoding", "").lower()
        )
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        response = self.response
        assert response is not None
        keep_alive = self.parser.should_keep_alive()
        self.response = None
        self.until_close = False
        response._finish()
        if keep_alive and not self.closed:
            # The whole body is buffered in the response now: a pause for a slow reader must not
            # follow the connection into the pool, where the next request would never be answered.
            self.resume()
            self.pool.release(self)
        else:
            self.abort()

    # -- control ----------------------------------------------------------------------------------
    def pause(self) -> None:
        if self.transport is not None and not self.closed and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.transport is not None:
            self.transport.abort()


class _Expired(Exception):
    """A timer of this module ran out before what it bounds came (never leaves this module)."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class UpstreamResponse:
    """A backend's response: status and headers now, the body as it arrives."""

    def __init__(self, conn: _UpstreamConnection) -> None:
        self._conn = conn
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: UpstreamFailure | None = None
        self.complete = False

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.raw_headers}
        return self._headers

    # -- fed by the connection --------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: UpstreamFailure) -> None:
        self._error = error
        self._wake()

    # -- read by the gateway ----------------------------------------------------------------------
    async def next_chunk(self, timeout: float | None = None, what: str = "no data") -> bytes | None:
        """What has arrived of the body since the last call (waiting for something), None at its end;
        raises UpstreamFailure if the backend dies mid-body, or (TIMEOUT, "`what` within `timeout`")
        when nothing comes for `timeout` seconds. Data already here is returned without any timer:
        a stream relays every chunk through here."""
        return await self._next_chunk(None, timeout, what)

    async def _next_chunk(self, deadline: float | None, timeout: float | None, what: str) -> bytes | None:
        """next_chunk until `deadline` (loop time), else for `timeout` seconds from the first wait."""
        while True:
            if self._chunks:
                # Whatever has arrived goes on as one piece: fewer writes to the client, same bytes.
                data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                if self._buffered > _HIGH_WATER and not self.complete:
                    # _feed paused the backend: the client has caught up. (Once complete, the
                    # connection was resumed and released, and may carry another request.)
                    self._conn.resume()
                self._buffered = 0
                return data
            if self.complete:
                return None
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None
            if deadline is None and timeout is not None:
                deadline = loop.time() + timeout
            if deadline is not None:
                timer = loop.call_at(deadline, _expire, waiter)  # see _exchange: cheaper than asyncio.timeout
            try:
                await waiter
            except _Expired:
                raise UpstreamFailure(FailureClass.TIMEOUT, f"{what} within {timeout:.3g} s") from None
            finally:
                if timer is not None:
                    timer.cancel()
                self._waiter = None

    async def first_chunk(self, timeout: float | None = None, what: str = "no data") -> bytes:
        """The first piece of the body (b"" for an empty body)."""
        return await self.next_chunk(timeout, what) or b""

    def body_if_complete(self) -> bytes | None:
        """The whole body when all of it has arrived already (the usual small answer, which comes in
        the same read as its headers), else None: then `read()` it, with a timeout."""
        if not self.complete or self._error is not None:
            return None
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return data

    async def read(self, timeout: float | None = None, what: str = "no data") -> bytes:
        """The whole body; `timeout` bounds the whole of it (see next_chunk)."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        parts = []
        while (chunk := await self._next_chunk(deadline, timeout, what)) is not None:
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises UpstreamFailure if the backend dies mid-body."""
        return _Body(self)

    def close(self) -> None:
        """Give up on the rest of the body: the connection cannot be reused and is closed."""
        if not self.complete:
            self._conn.abort()


class _Body:
    """UpstreamResponse.iter_bytes: an iterator class rather than an async generator, which mypyc
    (it compiles this module: aifabric.native) does not compile."""

    __slots__ = ("_response",)

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._response.next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class _Pool:
    def __init__(self, client: UpstreamClient, origin: Origin, unix_socket: str | None = None) -> None:
        self.client = client
        self.origin = origin
        self.unix_socket = unix_socket  # connect here instead of the origin's host and port
        self.retired = False  # its origin's route changed: connections close instead of idling here
        self.idle: list[_UpstreamConnection] = []
        self.all: set[_UpstreamConnection] = set()

    async def connect(self, timeout: float) -> _UpstreamConnection:
        scheme, host, port = self.origin
        loop = asyncio.get_running_loop()
        ssl_ctx = self.client.ssl_context if scheme == "https" else None
        path = self.unix_socket
        where = f"unix socket {path}" if path else f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout):
                if path:
                    _, conn = await loop.create_unix_connection(lambda: _UpstreamConnection(self), path)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _UpstreamConnection(self),
                        host,
                        port,
                        ssl=ssl_ctx,
                        server_hostname=host if ssl_ctx else None,
                    )
        except TimeoutError:
            raise UpstreamFailure(
                FailureClass.TIMEOUT, f"connect to {where} timed out after {timeout:g}s"
            ) from None
        except ssl.SSLError as exc:
            raise UpstreamFailure(FailureClass.CONNECT, f"TLS handshake with {where} failed: {exc}") from None
        except OSError as exc:
            if exc.errno in _OWN_RESOURCES:
                # Our process is out of descriptors or memory: the backend has nothing to do with it.
                log.error(
                    "cannot open a connection to %s: %s (the gateway's own limit: raise the open "
                    "files limit, e.g. LimitNOFILE, or lower gateway.max_connections)",
                    where,
                    exc.strerror,
                )
                raise OutOfResources(
                    "The gateway is out of resources (open files or memory) right now; retry shortly."
                ) from None
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise UpstreamFailure(FailureClass.CONNECT, f"cannot connect to {where}: {reason}") from None
        except UnicodeError:  # a name the resolver cannot even encode (a label over 63 characters)
            raise UpstreamFailure(
                FailureClass.CONNECT, f"cannot connect to {where}: not a valid host name"
            ) from None
        self.all.add(conn)
        return conn

    def acquire_idle(self) -> _UpstreamConnection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()  # the most recently used first
            if conn.closed:
                continue
            if now - conn.idle_since > self.client.idle_ttl:
                # Idle this long, the backend may be closing it right now (uvicorn, which vLLM and
                # llama-cpp-python run on, closes after 5 s): a fresh connection is cheaper than the
                # race. Every connection below it in the stack is older still.
                for stale in [conn, *self.idle]:
                    stale.abort()
                self.idle.clear()
                return None
            conn.reused = True
            return conn
        return None

    def release(self, conn: _UpstreamConnection) -> None:
        if not self.retired and len(self.idle) < self.client.max_idle_per_origin:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.abort()

    def discard(self, conn: _UpstreamConnection) -> None:
        self.all.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)


class UpstreamClient:
    """Pooled HTTP/1.1 client for backends. One per process; safe to share across tasks."""

    def __init__(
        self,
        *,
        connect_timeout: float = 3.0,
        max_idle_per_origin: int = 256,
        idle_ttl: float = 4.0,
        user_agent: str = "aifabric",
    ) -> None:
        self.idle_ttl = idle_ttl
        self.connect_timeout = connect_timeout
        self.max_idle_per_origin = max_idle_per_origin
        self.user_agent = user_agent
        self._pools: dict[Origin, _Pool] = {}
        self._ssl: ssl.SSLContext | None = None
        self._unix_sockets: dict[Origin, str] = {}

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def route_unix(self, routes: Mapping[Origin, str]) -> None:
        """Connect to these origins through these Unix sockets (backends' `unix_socket`), the rest
        over TCP. A changed route takes effect for new connections at once: the origin's pool is
        retired (its idle connections closed, the busy ones closed when their request ends)."""
        new = dict(routes)
        for origin in set(self._unix_sockets) | set(new):
            if self._unix_sockets.get(origin) != new.get(origin):
                pool = self._pools.pop(origin, None)
                if pool is not None:
                    pool.retired = True
                    for conn in pool.idle:
                        conn.abort()
                    pool.idle.clear()
        self._unix_sockets = new

    def _pool(self, origin: Origin) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self, origin, self._unix_sockets.get(origin))
        return pool

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        timeout: float | None = None,
    ) -> UpstreamResponse:
        origin, target = split_url(url)
        return await self.send(origin, method, target, headers or [], body, timeout)

    async def fetch(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """A whole exchange (headers and body) within `timeout`: for tools, not the data plane."""
        try:
            async with asyncio.timeout(timeout):
                resp = await self.request(method, url, headers, body, timeout=timeout)
                try:
                    return resp.status, resp.headers, await resp.read()
                finally:
                    resp.close()
        except TimeoutError:
            raise UpstreamFailure(FailureClass.TIMEOUT, f"no complete answer within {timeout:g}s") from None

    async def send(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; returns once the response headers are in (within `timeout`)."""
        pool = self._pool(origin)
        host_header = origin[1] if origin[2] in (80, 443) else f"{origin[1]}:{origin[2]}"
        head = [f"{method} {target} HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: {self.user_agent}\r\n"]
        head.extend(f"{k}: {v}\r\n" for k, v in headers)
        head.append(f"content-length: {len(body)}\r\n\r\n")
        payload = "".join(head).encode("latin-1") + body
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        # A pooled connection the backend closed while idle fails before any byte of the response;
        # that is not the backend's fault, so it is retried once on a fresh connection.
        for fresh in (False, True):
            conn = None if fresh else pool.acquire_idle()
            if conn is None:
                remaining = self.connect_timeout if deadline is None else deadline - loop.time()
                conn = await pool.connect(max(0.001, min(self.connect_timeout, remaining)))
            try:
                return await self._exchange(conn, payload, deadline, loop)
            except UpstreamFailure as failure:
                if conn.reused and failure.failure is FailureClass.CONNECT and not fresh:
                    continue
                raise
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        conn: _UpstreamConnection,
        payload: bytes,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> UpstreamResponse:
        response = UpstreamResponse(conn)
        conn.response = response
        # Kept in a local: once this response completes, the connection goes back to the pool and
        # another request may install its own future on it before this task even resumes.
        headers_done: asyncio.Future[None] = loop.create_future()
        conn.headers_done = headers_done
        assert conn.transport is not None
        conn.transport.write(payload)
        # One timer that fails the future, not asyncio.timeout(): no Timeout object, no cancelling
        # and uncancelling of the task, and no race to settle between the headers and the timer
        # (whichever resolves the future first wins). Every proxied request waits here.
        timer = None if deadline is None else loop.call_at(deadline, _expire, headers_done)
        try:
            await headers_done
        except _Expired:
            self._abort_if_ours(conn, response)
            raise UpstreamFailure(
                FailureClass.TIMEOUT, "no response headers before the timeout", sent=True
            ) from None
        except asyncio.CancelledError:
            # The client of the gateway went away: the backend must see the request cancelled.
            self._abort_if_ours(conn, response)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if conn.headers_done is headers_done:
                conn.headers_done = None
        return response

    @staticmethod
    def _abort_if_ours(conn: _UpstreamConnection, response: UpstreamResponse) -> None:
        """Abort the connection only while it still carries this response: a completed one is back in
        the pool, possibly serving another request already."""
        if conn.response is response:
            conn.abort()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            for conn in list(pool.all):
                conn.abort()
        self._pools.clear()
