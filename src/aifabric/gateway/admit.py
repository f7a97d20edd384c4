"""What every API route does with a request's principal around forwarding it: the same for OpenAI's
routes and for Anthropic's `/v1/messages`, each of which answers errors in its own shape.

    admitted = admit(admission, principal, route, payload, request.headers)   # 403, 429, 400
    req = ForwardRequest(...)
    return await admitted.forward(req, forwarder.forward)

`admit` checks the key's roles (403 `model_not_allowed`), its and the role's limits (429 with
`Retry-After` and `x-ratelimit-*`), and reads the priority (`x-aifabric-priority` may lower it).
`forward` stamps the priority and principal on the request, takes the key's lease of its concurrency
limit where every replica counts it (Redis: a round trip, so here rather than in `admit`), adds the
rate-limit headers to the answer and gives the ticket back when the answer is over (a stream: its
last byte, or its client leaving).
Under a tokens-per-minute limit the admission's estimate is replaced by what the answer cost: a
non-streamed answer's usage, or for a stream the counts the forwarder saw pass when it ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aifabric.errors import ApiError, BadRequest, Forbidden
from aifabric.gateway.forward import ForwardRequest
from aifabric.http.server import Request, Response, StreamingResponse
from aifabric.routing.table import Route
from aifabric.tenancy.admission import Admission, Ticket
from aifabric.tenancy.principal import ANONYMOUS, Principal, Priority
from aifabric.tenancy.tokens import stream_tokens, total_tokens

__all__ = ["PRIORITY_HEADER", "Admitted", "admit", "check_role", "principal_of", "request_priority"]

Answer = Response | StreamingResponse
Send = Callable[[ForwardRequest], Awaitable[Answer]]


class Admitted:
    __slots__ = ("principal", "priority", "ticket")

    def __init__(self, principal: Principal, priority: Priority, ticket: Ticket | None) -> None:
        self.principal = principal
        self.priority = priority
        self.ticket = ticket

    def forward(self, req: ForwardRequest, send: Send) -> Awaitable[Answer]:
        """`send(req)` with the priority and principal stamped on `req`; with a ticket, wrapped so
        the ticket is given back (no wrapper at all without one: the common case adds no frame)."""
        req.priority = self.priority
        req.principal = self.principal
        ticket = self.ticket
        if ticket is None:
            return send(req)
        if req.stream and ticket.counts_tokens:
            # A stream's tokens are known at its end only: the forwarder reports them there.
            payload = req.body.payload

            def settle(usage: bytes | None, counted_out: int) -> None:
                ticket.settle(stream_tokens(usage, payload, counted_out))

            req.on_tokens = settle
        return _forward_with_ticket(req, send, ticket)


async def _forward_with_ticket(req: ForwardRequest, send: Send, ticket: Ticket) -> Answer:
    if ticket.pending is not None:  # a key's concurrency counted on the shared state: its lease first
        try:
            await ticket.hold()
        except ApiError as exc:
            exc.role = req.route.name  # as admit's refusals: the ledger's row says which role
            raise
    try:
        response = await send(req)
    except BaseException:
        ticket.release()
        raise
    return _with_ticket(response, ticket, req.reported)


def principal_of(request: Request) -> Principal:
    """Who sent `request`: the principal the gateway authenticated it as (kept on `request.auth`)."""
    auth = request.auth
    return auth if isinstance(auth, Principal) else ANONYMOUS


def admit(
    admission: Admission,
    principal: Principal,
    route: Route,
    payload: dict[str, Any],
    headers: Mapping[str, str],
) -> Admitted:
    """Whether `principal` may send this request to `route` now; Forbidden, RateLimited or
    BadRequest (a bad priority header) otherwise."""
    try:
        check_role(principal, route.name)
        priority = request_priority(principal, headers)
        ticket = admission.admit(principal, route.name, route.config.limits, payload)
    except ApiError as exc:
        exc.role = route.name  # the ledger's row of the refusal says which role was refused
        raise
    return Admitted(principal, priority, ticket)


PRIORITY_HEADER = "x-aifabric-priority"


def request_priority(principal: Principal, headers: Mapping[str, str]) -> Priority:
    """The key's priority, or `batch` when the request asks for it in `x-aifabric-priority`. A header
    may lower a request's priority, never raise it: a batch key stays behind interactive ones."""
    asked = headers.get(PRIORITY_HEADER)
    if asked is None:
        return principal.priority
    try:
        priority = Priority(asked.strip().lower())
    except ValueError:
        raise BadRequest(
            f"The header {PRIORITY_HEADER} must be 'interactive' or 'batch'.", code="invalid_priority"
        ) from None
    return Priority.BATCH if priority is Priority.BATCH else principal.priority


def check_role(principal: Principal, role: str) -> None:
    """403 when the key is limited to other roles (raised inside the route, so each API's own error
    shape applies: OpenAI's here, Anthropic's on /v1/messages)."""
    if not principal.allows(role):
        allowed = ", ".join(sorted(principal.roles or ())) or "none"
        raise Forbidden(
            f"The API key '{principal.name}' may not use the model '{role}'. It may use: {allowed}.",
            type="invalid_request_error",
            code="model_not_allowed",
            param="model",
        )


def _with_ticket(
    response: Response | StreamingResponse, ticket: Ticket, reported: tuple[int, int, int] | None
) -> Response | StreamingResponse:
    """The rate-limit headers on the answer; the ticket given back when the answer is over (for a
    stream: when its last byte is sent or its client goes away). `reported`: the answer's tokens as
    the forwarder read them for the ledger, when it did."""
    response.headers.extend(ticket.headers)
    if isinstance(response, StreamingResponse):
        response.chunks = _Released(response.chunks, ticket)
        return response
    if ticket.counts_tokens and response.status < 300:
        ticket.settle(reported[2] if reported is not None else total_tokens(response.body))
    ticket.release()
    return response


class _Released:
    """A stream's chunks, passed through; the ticket is released once, at the end or on aclose."""

    __slots__ = ("_chunks", "_ticket")

    def __init__(self, chunks: AsyncIterator[bytes], ticket: Ticket) -> None:
        self._chunks = chunks
        self._ticket = ticket

    def __aiter__(self) -> _Released:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except BaseException:
            self._ticket.release()
            raise

    async def aclose(self) -> None:
        self._ticket.release()
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
