"""The OpenAI-compatible routes: parse just enough of the request to route it, then forward.

Only `model`, `stream` and `stream_options` are read, and for a role with several targets the fields of
its session affinity key (routing.affinity); every other field passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import orjson

from aifabric.errors import BadRequest, ModelNotFound
from aifabric.gateway.admit import admit, principal_of
from aifabric.gateway.body import RequestBody, parse_json_body
from aifabric.gateway.forward import Forwarder, ForwardRequest
from aifabric.gateway.request_ids import request_id, shown
from aifabric.http.server import Request, Response, StreamingResponse
from aifabric.routing.affinity import session_key
from aifabric.routing.table import Route, RoutingTable
from aifabric.tenancy.admission import Admission
from aifabric.tenancy.principal import Principal

__all__ = ["OpenAIRoutes", "parse_json_body", "request_id_of"]

# Which role kinds may serve which endpoint. A chat model also answers plain completions
# (vLLM and llama.cpp serve both for one model); an embeddings model answers only embeddings.
_ENDPOINT_KINDS: dict[str, tuple[str, ...]] = {
    "/chat/completions": ("chat",),
    "/completions": ("chat", "completions"),
    "/embeddings": ("embeddings",),
}
_ENDPOINT_NAMES = {
    "/chat/completions": "chat completions",
    "/completions": "completions",
    "/embeddings": "embeddings",
}


request_id_of = request_id  # for the other API routes: one id scheme (see request_ids)


# Where a role of each kind is served, for the "wrong route" message of the OpenAI routes.
_SERVES = {
    "chat": "/v1/chat/completions",
    "embeddings": "/v1/embeddings",
    "completions": "/v1/completions",
    "rerank": "/v1/rerank",
    "transcription": "/v1/audio/transcriptions",
}


def resolve_role(
    table: RoutingTable,
    model: Any,
    kinds: Collection[str],
    what: str,
    routes_of_kind: dict[str, str],
    *,
    list_kinds: bool = False,
) -> Route:
    """The role `model` names, which must be of one of `kinds` (else a 400 that says where it is
    served, from `routes_of_kind`); every API route resolves its `model` here. Long names are shown cut.
    An unknown name is a 404 listing every role and alias (as /v1/models does), or with `list_kinds`
    only those of `kinds` (Anthropic's API, whose model list shows only those)."""
    if model is None or model == "":
        raise BadRequest("You must provide a model parameter.", param="model", code="missing_model")
    if not isinstance(model, str):
        raise BadRequest("`model` must be a string.", param="model", code="invalid_model")
    route = table.resolve(model)
    if route is None:
        listed = (n for n, r in table.names.items() if not list_kinds or r.kind in kinds)
        valid = ", ".join(sorted(listed))
        if not valid:
            valid = f"none (no role of kind {' or '.join(kinds)} is configured)"
        message = f"The model '{shown(model)}' does not exist. Valid models: {valid}."
        raise ModelNotFound(message, param="model")
    if route.kind not in kinds:
        raise BadRequest(
            f"The model '{shown(model)}' is {'an' if route.kind[0] in 'aeiou' else 'a'} "
            f"{route.kind} role and does not serve {what}; "
            f"send it to {routes_of_kind.get(route.kind, 'its own route')}.",
            param="model",
            code="wrong_model_kind",
        )
    return route


class OpenAIRoutes:
    def __init__(
        self, table: Callable[[], RoutingTable], forwarder: Forwarder, admission: Admission | None = None
    ) -> None:
        self._table = table
        self._forwarder = forwarder
        self.admission = admission or Admission()

    def resolve(self, payload: dict[str, Any], endpoint: str) -> Route:
        return resolve_role(
            self._table(), payload.get("model"), _ENDPOINT_KINDS[endpoint], _ENDPOINT_NAMES[endpoint], _SERVES
        )

    async def proxy(self, request: Request, endpoint: str) -> Response | StreamingResponse:
        payload = parse_json_body(request.body)
        body = RequestBody(request.body, payload)
        route = self.resolve(payload, endpoint)
        admitted = admit(self.admission, principal_of(request), route, payload, request.headers)
        stream = payload.get("stream") is True and endpoint != "/embeddings"
        req = request.forwarded = ForwardRequest(route, endpoint, body, stream, request_id(request.headers))
        if route.config.affinity and len(route.targets) > 1:  # one target: nothing to choose
            req.session = session_key(request.headers, payload)
        return await admitted.forward(req, self._forwarder.forward)

    def models(self, principal: Principal) -> Response:
        table = self._table()
        if principal.roles is None:
            return Response(200, table.models_body)
        return Response(200, _models_for(table, principal.roles))

    def model(self, name: str, principal: Principal) -> Response:
        table = self._table()
        route = table.resolve(name)
        if route is not None and not principal.allows(route.name):
            route = None  # a role the key may not use does not exist for it
        if route is None:
            valid = sorted(n for n, r in table.names.items() if principal.allows(r.name))
            raise ModelNotFound(
                f"The model '{shown(name)}' does not exist. Valid models: {', '.join(valid)}."
            )
        obj = {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "aifabric",
            "role": route.name,
            "kind": route.kind,
        }
        return Response(200, orjson.dumps(obj))


# (the full /v1/models body, roles) -> the body a key limited to those roles sees. Keyed by the body
# itself, not the table's id (a reloaded table may reuse a freed one's id): bytes cache their hash.
_filtered: dict[tuple[bytes, frozenset[str]], bytes] = {}


def _models_for(table: RoutingTable, roles: frozenset[str]) -> bytes:
    key = (table.models_body, roles)
    body = _filtered.get(key)
    if body is None:
        full = orjson.loads(table.models_body)
        full["data"] = [m for m in full["data"] if m.get("role") in roles]
        body = orjson.dumps(full)
        if len(_filtered) > 256:
            _filtered.clear()
        _filtered[key] = body
    return body
