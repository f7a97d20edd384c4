"""What the request path hands the ledger (a small tuple), and the row it becomes off the path.

The request path builds one `Pending` per answered request: names, status, latency and the tokens:
a non-streamed answer's flat usage object as the forwarder read it (once, for a tokens-per-minute
limit too), else the raw tail of the answer from its `"usage"` on (a stream's, or nested details), or
the request and answer to count from when the backend gave none. The writer thread turns it into a
`UsageRow` (tokens, whether they were estimated, cost) before the batch insert: what is left to
parse, it parses off the request path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["COLUMNS", "Pending", "UsageRow"]


class Pending(NamedTuple):
    """One request as recorded on the request path (cheap to build: a tuple)."""

    ts: float  # wall clock, seconds
    key: str  # the caller's key name ("master", "anonymous" when the gateway has no keys)
    role: str  # the role the client asked for
    backend: str  # "" when no backend was reached (refused before routing)
    model: str  # the model id sent upstream
    endpoint: str  # "/chat/completions", ...
    status: int
    latency: float  # seconds, to the end of the answer (of the stream, for a stream)
    request_id: str
    usage: bytes | None = None  # the answer's `"usage": {...}` tail, as the backend wrote it
    counted: tuple[int, int] | None = None  # (in, out) counted by the gateway: estimated
    payload: dict[str, Any] | None = None  # the request, to estimate prompt tokens (only without usage)
    output: bytes | None = None  # the answer, to estimate completion tokens (only without usage)
    reported: tuple[int, int] | None = None  # the backend's (in, out), already read (then no `usage`)


class UsageRow(NamedTuple):
    """One row of the ledger."""

    ts: float
    key: str
    role: str
    backend: str
    model: str
    endpoint: str
    tokens_in: int
    tokens_out: int
    estimated: bool  # tokens counted or estimated by the gateway, not the backend's own figures
    cost: float
    latency_ms: float
    status: int
    request_id: str


COLUMNS = UsageRow._fields
