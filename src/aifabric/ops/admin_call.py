"""One POST to an admin route of a running gateway, as `aifabric wake` makes it: its status and JSON
body, or why there was none, telling a gateway that refused the connection (none listens: the command
may act by itself) from one that took the request and then failed (it may have acted).

    call = post_admin("http://127.0.0.1:8000", "/admin/hosts/ws/wake", api_key=None, timeout=40)
    call.status, call.body, call.error     # None, {}, "unreachable (...)" when nothing answered
    call.refused                           # True when no connection could be made (nothing listens)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from aifabric.core import FailureClass
from aifabric.errors import UpstreamFailure
from aifabric.http.client import UpstreamClient

__all__ = ["AdminCall", "post_admin"]


@dataclass
class AdminCall:
    url: str  # the gateway's base URL (without /v1)
    status: int | None = None  # HTTP status, None when the gateway did not answer
    body: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # unreachable, an error answer's message, or an answer that is not JSON
    refused: bool = False  # no connection at all: no gateway listens there

    @property
    def code(self) -> str | None:
        """The `error.code` of an error answer (e.g. `unknown_route`), else None."""
        error = self.body.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        return str(code) if code is not None else None


def post_admin(url: str, path: str, *, api_key: str | None, timeout: float) -> AdminCall:
    """POST `path` (an /admin route) on the gateway at `url`, with the admin key when one is given."""
    return asyncio.run(_post(url, path, api_key, timeout))


async def _post(url: str, path: str, api_key: str | None, timeout: float) -> AdminCall:
    base = url.rstrip("/").removesuffix("/v1")
    call = AdminCall(base)
    headers: list[tuple[str, str]] = []
    if api_key:
        headers.append(("authorization", f"Bearer {api_key}"))
    client = UpstreamClient(connect_timeout=min(timeout, 3.0))
    answered = False  # the response headers came: a gateway listens, whatever happens next
    try:
        async with asyncio.timeout(timeout):
            resp = await client.request("POST", base + path, headers, b"", timeout=timeout)
            answered = True
            try:
                status, body = resp.status, await resp.read()
            finally:
                resp.close()
    except (UpstreamFailure, TimeoutError) as exc:
        if isinstance(exc, UpstreamFailure):
            call.error = f"unreachable ({exc.failure}: {exc.detail})"
            # Refused before any answer, and not a connection dropped after the request was sent
            # (request_suspect): nothing received it, so nothing was done.
            call.refused = exc.failure is FailureClass.CONNECT and not exc.request_suspect and not answered
        else:
            call.error = f"unreachable (timeout: no complete answer within {timeout:g}s)"
        return call
    finally:
        await client.aclose()
    call.status = status
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        call.error = f"answered HTTP {status} with something that is not JSON"
        return call
    call.body = parsed
    if status >= 300:
        error = parsed.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        call.error = f"HTTP {status}: {message or 'no message'}"
    return call
