"""The task routes: rerank (`/v1/rerank`, `/rerank`, `/v1/score`) on roles of kind `rerank`, and
`/v1/audio/transcriptions` on roles of kind `transcription`. OpenAI's error shape; see
`dialects.rerank` and `dialects.transcription` for what is sent and answered."""

from __future__ import annotations

from collections.abc import Callable

from aifabric.gateway.dialect_routes import DialectForwarding
from aifabric.gateway.dialects.rerank import RerankDialect, parse_rerank, parse_score
from aifabric.gateway.dialects.transcription import MultipartBody, TranscriptionDialect
from aifabric.gateway.forward import Forwarder
from aifabric.gateway.openai_routes import parse_json_body
from aifabric.http.server import Request, Response, StreamingResponse
from aifabric.routing.table import RoutingTable
from aifabric.tenancy.admission import Admission

__all__ = ["PATHS", "TaskRoutes"]

PATHS = ("/rerank", "/score", "/audio/transcriptions")


class TaskRoutes:
    def __init__(
        self, table: Callable[[], RoutingTable], forwarder: Forwarder, admission: Admission | None = None
    ) -> None:
        self._forwarding = DialectForwarding(table, forwarder, admission)

    async def serve(self, request: Request, sub: str) -> Response | StreamingResponse:
        if sub == "/audio/transcriptions":
            content_type = request.headers.get("content-type", "")
            body = MultipartBody(request.body, content_type)
            route = self._forwarding.resolve(body.payload.get("model"), ("transcription",), "transcription")
            stream = str(body.payload.get("stream", "")).strip().lower() == "true"
            dialect = TranscriptionDialect(content_type)
            return await self._forwarding.forward(
                request, route, dialect, body.payload, stream=stream, body=body
            )
        payload = parse_json_body(request.body)
        rerank = parse_score(payload) if sub == "/score" else parse_rerank(payload)
        route = self._forwarding.resolve(rerank.model, ("rerank",), "rerank")
        return await self._forwarding.forward(
            request, route, RerankDialect(rerank, score=sub == "/score"), payload
        )
