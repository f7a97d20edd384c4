"""Config reloads as the running gateway sees them: asked over HTTP, announced by another gateway, or
noticed on disk (`gateway.watch`). All go through `Gateway.reloader` (`gateway.reload.reload_from_file`
with what `serve` or `up` needs), so each is the same reload as SIGHUP.

    POST /admin/config/reload   200 {"applied": true, "diff": {...}, "version", "shared_through"}
                                422 {"error": {...}, "reload": {"problems": [{file, line, message, fix}]}}
                                409 when the gateway runs the embedded default (no file to re-read)

The route is an admin route (`admin_routes.check_admin_access`: an admin key when keys are configured, else
loopback only). It reaches one worker of one replica; that worker announces the reload through the
state store, and every other worker and replica sharing the store reloads its own fabric file in its
next sync round (a second at most by default). A replica whose file differs from the announcing one
(a ConfigMap not yet updated on that node) says so in its log.

Watching polls the modification time and size of the fabric file and its env file every 2 s: two
`stat` calls, off the request path. Each worker and replica watches its own files (no announcement).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from aifabric.config.schema import FabricConfig
from aifabric.errors import ApiError, MethodNotAllowed, StateStoreError
from aifabric.gateway.admin_routes import check_admin_access
from aifabric.gateway.errors import error_body
from aifabric.gateway.operator_access import OperatorAccess
from aifabric.gateway.reload import ReloadOutcome
from aifabric.http.server import Request, Response
from aifabric.state import StateSync

__all__ = ["RELOAD_PATH", "WATCH_INTERVAL", "ReloadHost", "Reloads"]

log = logging.getLogger("aifabric.gateway")

RELOAD_PATH = "/admin/config/reload"
WATCH_INTERVAL = 2.0


class ReloadHost(Protocol):
    """What `Reloads` reads of the running gateway (the `Gateway` is one), so this module does not
    import `gateway.app`, which imports it. Each member is read at the moment of use, never cached:
    `reloader` and `state_sync` are set after construction, and a reload replaces `config` and `operator`."""

    @property
    def config(self) -> FabricConfig: ...

    @property
    def operator(self) -> OperatorAccess: ...

    @property
    def reloader(self) -> Callable[[], ReloadOutcome] | None: ...

    @property
    def state_sync(self) -> StateSync | None: ...


class Reloads:
    def __init__(self, gateway: ReloadHost) -> None:
        self._gw = gateway

    # -- asked over HTTP -------------------------------------------------------------------------

    async def route(self, request: Request) -> Response:
        check_admin_access(self._gw.operator, request)
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.path} accepts POST only.")
        reloader = self._gw.reloader
        if reloader is None:
            raise ApiError(
                "This gateway serves the embedded default, not a fabric file: there is nothing to re-read. "
                "Start it with --config FILE to reload changes.",
                status=409,
                type="invalid_request_error",
                code="no_fabric_file",
            )
        outcome = reloader()
        _log(outcome, "asked over HTTP")
        if not outcome.applied:
            body = orjson.loads(error_body(outcome.message, "invalid_request_error", "config_refused"))
            body["reload"] = outcome.to_dict()
            return Response(422, orjson.dumps(body))
        view = outcome.to_dict()
        view["shared_through"] = await self._announce(outcome)
        return Response(200, orjson.dumps(view))

    async def _announce(self, outcome: ReloadOutcome) -> str | None:
        """Tell the other workers and replicas; what they share through, or None when alone."""
        sync = self._gw.state_sync
        if sync is None:
            return None
        announcement = orjson.dumps({"version": outcome.version, "by": sync.holder}).decode()
        try:
            await sync.announce_config(announcement)
        except StateStoreError as exc:
            log.warning("reload applied here, but not announced to the other gateways: %s", exc)
            return None
        return sync.store.describe()

    # -- announced by another gateway ------------------------------------------------------------

    def on_announced(self, announcement: str) -> None:
        reloader = self._gw.reloader
        if reloader is None:
            return
        try:
            data: Any = orjson.loads(announcement)
            origin, version = str(data.get("by")), data.get("version")
        except (orjson.JSONDecodeError, AttributeError):
            origin, version = "another gateway", None
        outcome = reloader()
        _log(outcome, f"announced by {origin}")
        if outcome.applied and version and outcome.version != version:
            log.warning(
                "this gateway's fabric file or env file differs from the one %s reloaded (version %s here, "
                "%s there): copy the same files to every replica",
                origin,
                outcome.version,
                version,
            )

    # -- noticed on disk -------------------------------------------------------------------------

    async def watch(self, stop: asyncio.Event, interval: float = WATCH_INTERVAL) -> None:
        """Reload whenever the fabric file or its env file changes, until `stop` is set."""
        seen = self._stamp()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            now = self._stamp()
            if now == seen or stop.is_set():
                continue
            seen = now
            reloader = self._gw.reloader
            if reloader is not None:
                _log(reloader(), "the file changed (gateway.watch)")

    def _stamp(self) -> tuple[tuple[int, int] | None, ...]:
        config = self._gw.config
        return tuple(_stat(p) for p in (config.source, config.gateway.env_file))


def _stat(path: str | None) -> tuple[int, int] | None:
    if not path or path.startswith("<"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _log(outcome: ReloadOutcome, why: str) -> None:
    if outcome.applied:
        log.warning("%s (%s)", outcome.message, why)
    else:
        log.error("%s (%s)", outcome.message, why)
