"""Config reloads as the running gateway sees them: asked over HTTP, announced by another gateway, or
noticed on disk (`gateway.watch`). All go through `Gateway.reloader` (`gateway.reload.reload_from_file`
with what `serve` or `up` needs), so each is the same reload as SIGHUP.

    POST /admin/config/reload   200 {"applied": true, "diff": {...}, "version", "shared_through"}
                                422 {"error": {...}, "reload": {"problems": [{file, line, message, fix}]}}
                                409 when the gateway runs the embedded default (no file to re-read)

The route is an admin route (`admin_routes.check_admin_access`: an admin key when keys are configured, else
loopback only). It reaches one worker of one replica; that worker announces the reload through the
state store, and every other worker and replica sharing the store reloads its own fabric file in its
next sync round (a second at most by default) and records what it did in the store (`StateSync.members`:
applied or refused with its problems, the version of its files, when). With `?wait=SECONDS` the route
waits that long for every live gateway to answer, and its `processes` list says what each one did:

    {"holder": "host/pid/id", "state": "applied" | "refused" | "no_answer", "message", "problems",
     "version", "at", "same_files": bool}

A replica whose files differ from the announcing one's (a ConfigMap not yet updated on that node) shows
with `same_files: false`, and says so in its own log.

Watching polls the modification time and size of the fabric file and its env file every 2 s: two
`stat` calls, off the request path. Each worker and replica watches its own files (no announcement).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson

from aifabric.config.schema import FabricConfig
from aifabric.errors import ApiError, MethodNotAllowed, StateStoreError
from aifabric.gateway.admin_routes import check_admin_access
from aifabric.gateway.errors import error_body
from aifabric.gateway.operator_access import OperatorAccess
from aifabric.gateway.reload import ReloadOutcome, fabric_version
from aifabric.http.server import Request, Response
from aifabric.state import StateSync

__all__ = ["RELOAD_PATH", "WATCH_INTERVAL", "ReloadHost", "Reloads"]

log = logging.getLogger("aifabric.gateway")

RELOAD_PATH = "/admin/config/reload"
WATCH_INTERVAL = 2.0
_POLL = 0.1  # seconds between two reads of the other gateways' answers while waiting for them


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
        self._version: str | None = fabric_version(gateway.config)  # of the files now applied here

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
        wait = _wait_seconds(request.query)
        outcome = reloader()
        self.record(outcome)
        _log(outcome, "asked over HTTP")
        if not outcome.applied:
            body = orjson.loads(error_body(outcome.message, "invalid_request_error", "config_refused"))
            body["reload"] = outcome.to_dict()
            return Response(422, orjson.dumps(body))
        view = outcome.to_dict()
        announcement = await self._announce(outcome)
        sync = self._gw.state_sync
        view["shared_through"] = sync.store.describe() if announcement and sync else None
        if announcement is not None and sync is not None:
            view["processes"] = await _answers(sync, announcement, outcome.version, wait)
        return Response(200, orjson.dumps(view))

    async def _announce(self, outcome: ReloadOutcome) -> str | None:
        """Tell the other workers and replicas; the announcement, or None when alone."""
        sync = self._gw.state_sync
        if sync is None:
            return None
        by, reload_id = sync.holder, secrets.token_hex(6)
        announcement = orjson.dumps({"version": outcome.version, "by": by, "id": reload_id}).decode()
        try:
            await sync.announce_config(announcement)
            await sync.publish_member()  # this gateway's own answer, before anyone waits for it
        except StateStoreError as exc:
            log.warning("reload applied here, but not announced to the other gateways: %s", exc)
            return None
        return announcement

    # -- what this gateway did, for the others to read --------------------------------------------

    def attach(self, sync: StateSync) -> None:
        """Share this gateway's reloads through `sync`: follow the announced ones, report each one."""
        sync.on_config_announced = self.on_announced
        sync.config_report = _report(True, "loaded at start", (), self._version)

    def record(self, outcome: ReloadOutcome) -> None:
        """Note what a reload did (whoever asked for it), for `config reload` to read in the store."""
        if outcome.applied:
            self._version = outcome.version
        sync = self._gw.state_sync
        if sync is not None:
            problems = tuple(outcome.to_dict()["problems"])
            sync.config_report = _report(outcome.applied, outcome.message, problems, self._version)

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
        self.record(outcome)
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
                outcome = reloader()
                self.record(outcome)
                _log(outcome, "the file changed (gateway.watch)")

    def _stamp(self) -> tuple[tuple[int, int] | None, ...]:
        config = self._gw.config
        return tuple(_stat(p) for p in (config.source, config.gateway.env_file))


def _wait_seconds(query: str) -> float:
    """`?wait=SECONDS` (at most a minute); 0 when absent or not a number."""
    for key, value in parse_qsl(query):
        if key == "wait":
            with contextlib.suppress(ValueError):
                return min(60.0, max(0.0, float(value)))
    return 0.0


def _report(
    applied: bool, message: str, problems: tuple[dict[str, Any], ...], version: str | None
) -> dict[str, Any]:
    return {
        "applied": applied,
        "message": message,
        "problems": list(problems),
        "version": version,  # of the files this gateway runs now (still the old ones when refused)
        "at": time.time(),
    }


async def _answers(
    sync: StateSync, announcement: str, version: str | None, wait: float
) -> list[dict[str, Any]]:
    """What every live gateway did about `announcement`, waiting up to `wait` seconds for all to answer;
    the ones that have not by then are `no_answer`."""
    deadline = time.monotonic() + wait
    # Every gateway seen alive since the announcement must answer: one that stops renewing its record
    # meanwhile (it died, or stalled) stays expected, and ends as `no_answer`.
    members: dict[str, dict[str, Any]] = {}
    while True:
        try:
            members.update(await sync.members())
        except StateStoreError as exc:
            log.warning("cannot read the other gateways' answers: %s", exc)
        pending = [h for h, m in members.items() if m.get("announcement") != announcement]
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
    out: list[dict[str, Any]] = []
    for holder, member in sorted(members.items()):
        report = member.get("report") if isinstance(member.get("report"), dict) else {}
        assert isinstance(report, dict)
        state = "no_answer" if holder in pending else "applied" if report.get("applied") else "refused"
        out.append(
            {
                "holder": holder,
                "state": state,
                "message": str(report.get("message", "")) if state != "no_answer" else "",
                "problems": (report.get("problems") or []) if state != "no_answer" else [],
                "version": report.get("version"),
                "at": report.get("at"),
                "same_files": state == "applied" and report.get("version") == version,
            }
        )
    return out


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
