"""Time to first token and total time of streamed chat completions, over raw keep-alive sockets.

wrk sees a stream as one response; this client times the first body bytes of the event stream
(the first token) and the end of the response separately. httptools parses the response, so
chunked framing and keep-alive are handled the way a real client handles them.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import cast

import httptools

REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StreamStats:
    """Percentiles in microseconds over the successful streams."""

    count: int
    errors: int  # all failed streams: the kinds below add up to it
    ttft_p50_us: float
    ttft_p99_us: float
    total_p50_us: float
    total_p99_us: float
    timeouts: int = 0  # no complete response within 30 s
    bad_status: int = 0  # a status other than 200
    incomplete: int = 0  # 200 but the stream ended without `data: [DONE]`
    broken: int = 0  # connection refused, reset or closed mid-response, unparsable HTTP

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted list; 0.0 for an empty one."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summarize(ttfts: list[float], totals: list[float], kinds: Counter[str]) -> StreamStats:
    return StreamStats(
        count=len(ttfts),
        errors=sum(kinds.values()),
        ttft_p50_us=statistics.median(ttfts) if ttfts else 0.0,
        ttft_p99_us=percentile(ttfts, 99),
        total_p50_us=statistics.median(totals) if totals else 0.0,
        total_p99_us=percentile(totals, 99),
        timeouts=kinds["timeouts"],
        bad_status=kinds["bad_status"],
        incomplete=kinds["incomplete"],
        broken=kinds["broken"],
    )


class _StreamConn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.first_body: float | None = None
        self.done: asyncio.Future[tuple[int, float, bool]] | None = None
        self.saw_done_event = False
        self.tail = b""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed mid-response"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.done is not None and not self.done.done():
                self.done.set_exception(exc)

    def on_body(self, body: bytes) -> None:
        if self.first_body is None:
            self.first_body = time.perf_counter()
        # Keep only a short tail: enough to see the end marker across chunk boundaries ("data: [DONE]",
        # or a Responses stream's "response.completed" / a Messages stream's "message_stop" event,
        # which have no [DONE] after them).
        seen = self.tail + body
        if b"[DONE]" in seen or b"event: response.completed" in seen or b"event: message_stop" in seen:
            self.saw_done_event = True
        self.tail = seen[-64:]

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        keep = self.parser.should_keep_alive()
        first = self.first_body if self.first_body is not None else time.perf_counter()
        self.parser = httptools.HttpResponseParser(self)
        if self.done is not None and not self.done.done():
            self.done.set_result((status, first, keep))

    async def request(self, raw: bytes) -> tuple[int, float, float, bool]:
        """(status, ttft seconds, total seconds, saw the end marker) of one request."""
        assert self.transport is not None
        self.first_body = None
        self.saw_done_event = False
        self.tail = b""
        self.done = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        self.transport.write(raw)
        status, first, _ = await self.done
        return status, first - t0, time.perf_counter() - t0, self.saw_done_event


def build_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _worker(
    port: int,
    raw: bytes,
    deadline: float,
    remaining: list[int],
    ttfts: list[float],
    totals: list[float],
    kinds: Counter[str],
) -> None:
    loop = asyncio.get_running_loop()
    conn: _StreamConn | None = None
    while remaining[0] > 0 and time.monotonic() < deadline:
        remaining[0] -= 1
        try:
            if conn is None or conn.closed:
                _, conn = await loop.create_connection(_StreamConn, "127.0.0.1", port)
            status, ttft, total, complete = await asyncio.wait_for(conn.request(raw), REQUEST_TIMEOUT_S)
        except (TimeoutError, OSError, httptools.HttpParserError) as exc:
            kinds["timeouts" if isinstance(exc, TimeoutError) else "broken"] += 1
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            conn = None
            continue
        if status == 200 and complete:
            ttfts.append(ttft * 1e6)
            totals.append(total * 1e6)
        else:
            kinds["bad_status" if status != 200 else "incomplete"] += 1
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def measure_streams(
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    concurrency: int = 1,
    requests: int = 200,
    max_seconds: float = 10.0,
) -> StreamStats:
    """Send up to `requests` streamed requests (or until `max_seconds`), `concurrency` at a time."""
    raw = build_request(port, path, body, headers or {})
    ttfts: list[float] = []
    totals: list[float] = []
    kinds: Counter[str] = Counter()
    remaining = [requests]
    deadline = time.monotonic() + max_seconds
    await asyncio.gather(
        *(_worker(port, raw, deadline, remaining, ttfts, totals, kinds) for _ in range(concurrency))
    )
    return summarize(ttfts, totals, kinds)


def run_streams(
    port: int,
    path: str,
    body: str,
    headers: dict[str, str] | None = None,
    concurrency: int = 1,
    requests: int = 200,
    max_seconds: float = 10.0,
) -> StreamStats:
    """Synchronous wrapper: a fresh event loop per measurement."""
    return asyncio.run(
        measure_streams(port, path, body.encode(), headers, concurrency, requests, max_seconds)
    )
