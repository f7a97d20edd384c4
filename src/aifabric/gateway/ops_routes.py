"""Routes for operators and process managers: liveness, readiness, health view, metrics, status page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import orjson

from aifabric.gateway.ui import UI_PATHS, status_view, ui_response
from aifabric.gateway.view import GatewayView
from aifabric.http.server import Request, Response, StreamingResponse
from aifabric.observability.merged import SummedCounters
from aifabric.tenancy.usage_view import usage_view

__all__ = ["OpsRoutes"]


class OpsRoutes:
    def __init__(self, gateway: GatewayView) -> None:
        self._gw = gateway

    def route(self, request: Request) -> Awaitable[Response | StreamingResponse] | None:
        if request.method not in ("GET", "HEAD"):
            return None
        handler = {
            "/health/live": self.live,
            "/health/ready": self.ready,
            "/health": self.health,
            "/status": self.status,
            "/metrics": self.metrics,
        }.get(request.path)
        if handler is None and request.path in UI_PATHS:
            return self.ui(request.path)
        return handler() if handler is not None else None

    async def live(self) -> Response:
        return Response(200, b'{"status":"ok"}')

    async def ready(self) -> Response:
        """Ready when the routing table is loaded and at least one backend can take requests."""
        table = self._gw.table
        routable = [name for name, h in table.healths.items() if h.routable]
        body = {"status": "ready" if routable else "not_ready", "routable_backends": routable}
        if not routable:
            body["reason"] = "no backend is up: every backend is down, asleep or loading"
        return Response(200 if routable else 503, orjson.dumps(body))

    async def health(self) -> Response:
        from aifabric.health.report import health_view

        view = health_view(self._gw.table.healths, self._gw.config)
        return Response(200, orjson.dumps(view))

    async def status(self) -> Response:
        """The health view plus roles, targets, request counters and usage: what the status page polls.
        Under `serve --workers N` the counters (requests, and the usage per key and the ledger's rows)
        are every worker's summed, read from the files `/metrics` sums (observability.merged), so a
        refresh shows the same whichever worker answers."""
        summed = None
        shared = self._gw.shared_metrics
        if shared is not None:
            texts = await asyncio.to_thread(shared.expositions, self._gw.exposition())
            summed = SummedCounters.from_expositions(texts)
        view = status_view(self._gw.table, self._gw.metrics, self._gw.clock(), summed)
        view["tenancy"] = self._gw.tenancy_view()
        # Keys may come from the key store as well as gateway.api_keys: the live answer.
        view["gateway"]["auth_required"] = self._gw.auth.enabled
        view["usage"] = usage_view(self._gw.ledger, self._gw.budgets, summed)
        return Response(200, orjson.dumps(view))

    async def ui(self, path: str) -> Response:
        return ui_response(path)

    async def metrics(self) -> Response:
        """Prometheus text: under `serve --workers N` every worker's counters summed (whichever worker
        the scrape reaches: observability.merged), else this process's."""
        text = self._gw.exposition(open_fds=True)
        shared = self._gw.shared_metrics
        if shared is not None:
            text = await asyncio.to_thread(shared.merged, text)
        return Response(200, text.encode(), content_type="text/plain; version=0.0.4; charset=utf-8")
