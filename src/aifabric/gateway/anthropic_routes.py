"""Anthropic's Messages API on every chat role: `POST /v1/messages` and `/v1/messages/count_tokens`.

The gateway key may come as `x-api-key` (what Anthropic's SDKs send) or `Authorization: Bearer`;
`anthropic-version` and `anthropic-beta` are accepted and not needed. Every error on these routes,
the gateway's own and the backends', is in Anthropic's shape:
`{"type": "error", "error": {"type": "not_found_error", "message": "..."}}`. A key's or role's limits
are answered with Anthropic's `anthropic-ratelimit-*` headers as well as OpenAI's `x-ratelimit-*`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from aifabric.errors import ApiError
from aifabric.gateway.anthropic_models import MESSAGES_KINDS
from aifabric.gateway.dialect_routes import DialectForwarding
from aifabric.gateway.dialects.count_tokens import CountTokensDialect
from aifabric.gateway.dialects.messages import (
    FORWARDED_HEADERS,
    MessagesDialect,
    check_request,
    error_object,
)
from aifabric.gateway.forward import Forwarder
from aifabric.gateway.openai_routes import parse_json_body
from aifabric.http.server import Request, Response, StreamingResponse
from aifabric.routing.table import RoutingTable
from aifabric.tenancy.admission import Admission
from aifabric.tenancy.keyring import missing_key_message
from aifabric.tenancy.ratelimit import anthropic_headers

__all__ = ["PATHS", "AnthropicRoutes", "anthropic_error_response"]

PATHS = ("/messages", "/messages/count_tokens")
_MESSAGES = MessagesDialect()
_COUNT_TOKENS = CountTokensDialect()


def anthropic_error_response(exc: ApiError) -> Response:
    """An `ApiError` in Anthropic's error shape, its status and headers (Retry-After, ...) kept."""
    message = exc.message
    if exc.code == "missing_api_key":  # Anthropic's SDKs send the key as x-api-key: say so first
        # Only the words change: what `_tagged` appended (the request id) stays.
        message = message.replace(missing_key_message(), missing_key_message(anthropic=True), 1)
    body = orjson.dumps(error_object(exc.status, message))
    headers = list(exc.headers.items())
    headers.extend(anthropic_headers(headers, time.time()))
    return Response(exc.status, body, headers)


class AnthropicRoutes:
    def __init__(
        self, table: Callable[[], RoutingTable], forwarder: Forwarder, admission: Admission | None = None
    ) -> None:
        self._forwarding = DialectForwarding(table, forwarder, admission)

    async def serve(self, request: Request, sub: str) -> Response | StreamingResponse:
        # The x-ratelimit-* durations are counted from admission, just below: so are the absolute
        # anthropic-ratelimit-*-reset times, not from the end of a long generation.
        admitted_at = time.time()
        payload = parse_json_body(request.body)
        counting = sub == "/messages/count_tokens"
        what = "Anthropic's count_tokens" if counting else "Anthropic's Messages API"
        # An unknown model's 404 lists what Anthropic's model list shows: the chat roles and aliases.
        route = self._forwarding.resolve(payload.get("model"), MESSAGES_KINDS, what, list_kinds=True)
        check_request(payload, max_tokens_required=not counting)
        if counting:
            response = await self._forwarding.forward(request, route, _COUNT_TOKENS, payload)
        else:
            stream = payload.get("stream") is True
            sent = tuple((h, request.headers[h]) for h in FORWARDED_HEADERS if h in request.headers)
            dialect = MessagesDialect(sent) if sent else _MESSAGES
            response = await self._forwarding.forward(request, route, dialect, payload, stream=stream)
        # A few headers to look at: only a limited key's or role's answer has x-ratelimit-* ones.
        response.headers.extend(anthropic_headers(response.headers, admitted_at))
        return response
