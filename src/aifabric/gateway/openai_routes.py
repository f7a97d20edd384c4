"""The OpenAI-compatible routes: parse just enough of the request to route it, then forward.

Only `model`, `stream` and `stream_options` are read; every other field passes through untouched.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from typing import Any

import orjson

from aifabric.errors import BadRequest, ModelNotFound
from aifabric.gateway.admit import admit, principal_of
from aifabric.gateway.body import RequestBody
from aifabric.gateway.forward import Forwarder, ForwardRequest
from aifabric.http.server import Request, Response, StreamingResponse
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


def _new_id_source() -> tuple[itertools.count[int], str]:
    return itertools.count(1), f"{os.getpid():x}-{os.urandom(3).hex()}-"


_ids, _id_prefix = _new_id_source()


def _reset_ids_after_fork() -> None:
    # Workers fork from one parent: without this they would all count from the same prefix.
    global _ids, _id_prefix
    _ids, _id_prefix = _new_id_source()


os.register_at_fork(after_in_child=_reset_ids_after_fork)


def _request_id(headers: dict[str, str]) -> str:
    incoming = headers.get("x-request-id")
    if incoming and len(incoming) <= 128:
        return incoming
    return _id_prefix + str(next(_ids))


request_id_of = _request_id  # for the other API routes: one id scheme


def parse_json_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("The request body is empty; send a JSON object with at least `model`.")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:  # integers wider than 64 bits are valid JSON that orjson refuses
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: nesting deeper than orjson's limit (1024) also overflows json's stack.
            raise BadRequest(
                f"We could not parse the JSON body of your request ({exc}). "
                "Send a JSON object, with `Content-Type: application/json`."
            ) from None
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    return payload


class OpenAIRoutes:
    def __init__(
        self, table: Callable[[], RoutingTable], forwarder: Forwarder, admission: Admission | None = None
    ) -> None:
        self._table = table
        self._forwarder = forwarder
        self.admission = admission or Admission()

    def resolve(self, payload: dict[str, Any], endpoint: str) -> Route:
        model = payload.get("model")
        if model is None or model == "":
            raise BadRequest("You must provide a model parameter.", param="model", code="missing_model")
        if not isinstance(model, str):
            raise BadRequest("`model` must be a string.", param="model", code="invalid_model")
        table = self._table()
        route = table.resolve(model)
        if route is None:
            valid = ", ".join(sorted(table.names))
            raise ModelNotFound(f"The model '{model}' does not exist. Valid models: {valid}.", param="model")
        if route.kind not in _ENDPOINT_KINDS[endpoint]:
            serves = {
                "chat": "/v1/chat/completions",
                "embeddings": "/v1/embeddings",
                "completions": "/v1/completions",
                "rerank": "/v1/rerank",
                "transcription": "/v1/audio/transcriptions",
            }
            raise BadRequest(
                f"The model '{model}' is {'an' if route.kind[0] in 'aeiou' else 'a'} "
                f"{route.kind} role and does not serve {_ENDPOINT_NAMES[endpoint]}; "
                f"send it to {serves[route.kind]}.",
                param="model",
                code="wrong_model_kind",
            )
        return route

    async def proxy(self, request: Request, endpoint: str) -> Response | StreamingResponse:
        payload = parse_json_body(request.body)
        route = self.resolve(payload, endpoint)
        admitted = admit(self.admission, principal_of(request), route, payload, request.headers)
        stream = payload.get("stream") is True and endpoint != "/embeddings"
        body = RequestBody(request.body, payload)
        req = ForwardRequest(route, endpoint, body, stream, _request_id(request.headers))
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
            raise ModelNotFound(f"The model '{name}' does not exist. Valid models: {', '.join(valid)}.")
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
