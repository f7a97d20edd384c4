"""OpenAI's Responses API on every chat role: `POST /v1/responses`, `POST /v1/responses/input_tokens`,
`GET /v1/responses/{id}`.

    POST /v1/responses
        previous_response_id?  -> the stored conversation (unknown or expired: 400, param named)
        forward (routing, retries, failover, warm-up hold, deadlines: the forwarder's one loop), natively
        or translated per target (`dialects.responses_dialect`)
        store != false         -> the finished conversation is saved before the client sees the end
                                  (the last stream event is written after the save), so the next
                                  request may name it at once
    GET /v1/responses/{id}     a stored Response object (404 when unknown or expired)

Errors are OpenAI-shaped, as on the other OpenAI routes. The store is `state.responses`: in memory, or
Redis when `state:` is a Redis URL (every replica then continues every conversation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from aifabric.errors import ApiError, BadRequest, NotFound, StateStoreError
from aifabric.gateway.dialect_routes import DialectForwarding
from aifabric.gateway.dialects.responses import conversation_items, new_id
from aifabric.gateway.dialects.responses_dialect import InputTokensDialect, ResponsesDialect
from aifabric.gateway.forward import Forwarder
from aifabric.gateway.openai_routes import parse_json_body
from aifabric.http.server import Request, Response, StreamingResponse
from aifabric.routing.table import Route, RoutingTable
from aifabric.state.responses import ResponseStore
from aifabric.tenancy.admission import Admission

__all__ = ["PATHS", "ResponsesRoutes"]

log = logging.getLogger("aifabric.gateway")

PATHS = ("/responses", "/responses/input_tokens")


class ResponsesRoutes:
    def __init__(
        self,
        table: Callable[[], RoutingTable],
        forwarder: Forwarder,
        store: ResponseStore,
        *,
        clock: Callable[[], float] = time.time,
        admission: Admission | None = None,
    ) -> None:
        self._table = table
        self._forwarding = DialectForwarding(table, forwarder, admission)
        self.store = store
        self._clock = clock

    async def serve(self, request: Request, sub: str) -> Response | StreamingResponse:
        payload = parse_json_body(request.body)
        counting = sub == "/responses/input_tokens"
        what = "input token counts" if counting else "the Responses API"
        route = self._forwarding.resolve(payload.get("model"), ("chat",), what)
        history = await self._history(payload)
        if counting:
            return await self._count(request, route, payload, history)
        stream = payload.get("stream") is True
        dialect = ResponsesDialect(payload, new_id("resp"), history, clock=self._clock)
        if dialect.untranslatable is not None and not self._any_native(route, dialect, stream):
            raise dialect.untranslatable  # the client's 400, before anything is sent
        response = await self._forwarding.forward(request, route, dialect, payload, stream=stream)
        keep = payload.get("store") is not False
        if isinstance(response, StreamingResponse):
            if keep:
                response.chunks = _SavingStream(
                    response.chunks, lambda: self._saved(dialect, payload, history)
                )
            return response
        if keep and dialect.final is not None:
            await self._save(dialect.final, payload, history)
        return response

    async def get(self, response_id: str) -> Response:
        """`GET /v1/responses/{id}`: the stored Response object."""
        record = await self._load(response_id)
        if record is None:
            raise NotFound(
                f"No response found with id '{response_id}' (unknown, expired, or created with "
                "`store: false`).",
                code="response_not_found",
            )
        return Response(200, orjson.dumps(record["response"]))

    def _any_native(self, route: Route, dialect: ResponsesDialect, stream: bool) -> bool:
        """Whether a target of the role (or of its fallbacks) serves the Responses API itself."""
        table = self._table()
        endpoints = (table.endpoints.get(t.backend.name) for group in table.groups(route) for t in group)
        return any(e is not None and dialect.native_route(e, stream) for e in endpoints)

    # -- input_tokens ---------------------------------------------------------------------------------

    async def _count(
        self, request: Request, route: Route, payload: dict[str, Any], history: list[Any] | None
    ) -> Response | StreamingResponse:
        dialect = InputTokensDialect(payload, history)
        table = self._table()
        targets = [t for group in table.groups(route) for t in group]
        endpoints = [table.endpoints.get(t.backend.name) for t in targets]
        if not any(e is not None and dialect.counts(e) for e in endpoints):
            if dialect.untranslatable is not None:
                raise dialect.untranslatable
            kinds = sorted({e.adapter.kind for e in endpoints if e is not None})
            raise BadRequest(
                f"The model '{payload.get('model')}' cannot count input tokens: its backends "
                f"({', '.join(kinds) or 'none'}) have no tokenizer the gateway can ask (vllm, llamacpp) "
                "nor a native /v1/responses/input_tokens (`apis: [input_tokens]`).",
                param="model",
                code="input_tokens_unsupported",
            )
        return await self._forwarding.forward(request, route, dialect, payload)

    # -- the store ------------------------------------------------------------------------------------

    async def _load(self, response_id: str) -> dict[str, Any] | None:
        try:
            raw = await self.store.load(response_id)
        except StateStoreError as exc:
            # The gateway's own store failed, not the client: a 503 that says so.
            raise ApiError(
                f"{exc}; retry, or send the conversation as `input`.",
                status=503,
                type="service_unavailable",
                code="response_store_unavailable",
            ) from None
        if raw is None:
            return None
        record: dict[str, Any] = orjson.loads(raw)
        return record

    async def _history(self, payload: dict[str, Any]) -> list[Any] | None:
        previous = payload.get("previous_response_id")
        if previous is None:
            return None
        if not isinstance(previous, str) or not previous:
            raise BadRequest("`previous_response_id` must be a string.", param="previous_response_id")
        record = await self._load(previous)
        if record is None:
            raise BadRequest(
                f"Previous response with id '{previous}' not found: it is unknown, has expired (kept "
                f"{self.store.ttl:g}s), or was created with `store: false`. Send the conversation as "
                "`input` instead.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        items: list[Any] = record["items"]
        return items

    async def _save(self, final: dict[str, Any], payload: dict[str, Any], history: list[Any] | None) -> None:
        if final.get("status") not in ("completed", "incomplete"):
            return
        items = conversation_items(payload, history or [], final.get("output") or [])
        record = orjson.dumps({"items": items, "response": final})
        try:
            await self.store.save(str(final["id"]), record)
        except StateStoreError as exc:
            # The answer itself is good: the client gets it; only a later previous_response_id fails.
            log.warning("response %s not stored: %s", final.get("id"), exc)

    async def _saved(
        self, dialect: ResponsesDialect, payload: dict[str, Any], history: list[Any] | None
    ) -> bool:
        final = dialect.stream_done()
        if final is None:
            return False
        await self._save(final, payload, history)
        return True


class _SavingStream:
    """The stream as it comes; once the Response is finished it is saved, before the chunk that ends
    it goes out. A class, not a generator: the listener's aclose() must reach the relay even when the
    stream was never read (an unstarted async generator runs no cleanup)."""

    __slots__ = ("_chunks", "_save", "_saved")

    def __init__(self, chunks: AsyncIterator[bytes], save: Callable[[], Awaitable[bool]]) -> None:
        self._chunks = chunks
        self._save = save
        self._saved = False

    def __aiter__(self) -> _SavingStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._chunks.__anext__()
        if not self._saved:
            self._saved = await self._save()
        return chunk

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
