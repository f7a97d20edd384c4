"""What every route of a non-OpenAI client API shares: resolve the role, then forward with a dialect.

The routes themselves (`anthropic_routes`, `rerank_routes`, the Responses API's) parse and check their
own request, pick the dialect, and render errors in their API's shape; resolving `model` to a role of
the right kind, admitting the request (the key's roles and limits, gateway.admit) and handing it to the
forwarder (routing, retries, fallbacks, warm-up hold, deadlines, ejection, metrics) is done here, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aifabric.gateway.admit import admit, principal_of
from aifabric.gateway.body import RequestBody
from aifabric.gateway.dialects.base import BodyLike, Dialect
from aifabric.gateway.forward import Forwarder, ForwardRequest
from aifabric.gateway.openai_routes import request_id_of, resolve_role
from aifabric.http.server import Request, Response, StreamingResponse
from aifabric.routing.affinity import session_key
from aifabric.routing.table import Route, RoutingTable
from aifabric.tenancy.admission import Admission

__all__ = ["DialectForwarding"]

# Where a role of each kind is served, for the error that names the right route.
_ROUTE_OF_KIND = {
    "chat": "/v1/chat/completions, /v1/responses or /v1/messages",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "rerank": "/v1/rerank",
    "transcription": "/v1/audio/transcriptions",
}


class DialectForwarding:
    def __init__(
        self, table: Callable[[], RoutingTable], forwarder: Forwarder, admission: Admission | None = None
    ) -> None:
        self._table = table
        self._forwarder = forwarder
        self._admission = admission or Admission()

    def resolve(self, model: Any, kinds: tuple[str, ...], what: str, *, list_kinds: bool = False) -> Route:
        """The role `model` names, which must be of one of `kinds` (else a 400 naming its route; an
        unknown one a 404 listing all names, or only those of `kinds` with `list_kinds`)."""
        return resolve_role(self._table(), model, kinds, what, _ROUTE_OF_KIND, list_kinds=list_kinds)

    async def forward(
        self,
        request: Request,
        route: Route,
        dialect: Dialect,
        payload: dict[str, Any],
        *,
        stream: bool = False,
        body: BodyLike | None = None,
    ) -> Response | StreamingResponse:
        """Admit the request (the key's roles and limits: 403, 429), then forward it through the one
        retry/failover loop, natively or translated per target."""
        admitted = admit(self._admission, principal_of(request), route, payload, request.headers)
        sent = body if body is not None else RequestBody(request.body, payload)
        req = request.forwarded = ForwardRequest(
            route, dialect.native_path, sent, stream, request_id_of(request.headers), dialect=dialect
        )
        if route.config.affinity and len(route.targets) > 1:  # one target: nothing to choose
            req.session = session_key(request.headers, payload)
        return await admitted.forward(req, self._forwarder.forward)
