"""Admin routes of a gateway that runs under `aifabric up`: stop and start one local backend.

    GET  /admin/backends               the backends `up` runs: the supervisor's state, the gateway's view
    POST /admin/backends/{name}/stop   202: SIGTERM its process group; it stays down until started
    POST /admin/backends/{name}/start  202: start it again; readiness as at start-up

They exist only when a local supervisor is attached (`Gateway.attach_local`): `aifabric serve` has none,
and answers 404. They can take a backend out of service, so they are never open to everyone: with any
key configured they need an admin key (`gateway.admin_keys`); without keys, only loopback clients may
call them (see `gateway.operator_access`).
`aifabric drill` is their client.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

import orjson

from aifabric.errors import (
    ApiError,
    BadRequest,
    LocalBackendError,
    MethodNotAllowed,
    NotFound,
)
from aifabric.gateway.operator_access import OperatorAccess, is_loopback
from aifabric.gateway.view import GatewayView
from aifabric.http.server import Request, Response

__all__ = ["AdminRoutes", "LocalControl", "check_admin_access", "is_loopback"]

_PREFIX = "/admin/backends"
_ACTIONS = ("stop", "start")


class LocalControl(Protocol):
    """What the admin routes need from the local supervisor (`aifabric.local.supervisor.Supervisor`)."""

    def names(self) -> list[str]: ...

    def states(self) -> dict[str, str]: ...

    def pids(self) -> dict[str, int]: ...

    def stop_backend(self, name: str) -> None: ...

    def start_backend(self, name: str) -> None: ...

    def idle_backend(self, name: str, why: str) -> None: ...


def check_admin_access(operator: OperatorAccess, request: Request) -> None:
    """Every /admin route: with any key configured an admin key is needed; without, loopback clients
    only (see `gateway.operator_access`)."""
    operator.check(request.headers, request.client, admin_route=True)


def _parse(path: str) -> tuple[str | None, str | None] | None:
    """(backend, action) of an /admin/backends path: (None, None) for the list; None: not a route."""
    path = path.rstrip("/")
    if path == _PREFIX:
        return None, None
    if not path.startswith(_PREFIX + "/"):
        return None
    name, _, action = path[len(_PREFIX) + 1 :].partition("/")
    if not name or action not in _ACTIONS:
        return None
    return name, action


class AdminRoutes:
    def __init__(self, gateway: GatewayView, control: LocalControl) -> None:
        self._gw = gateway
        self._control = control

    def route(self, request: Request) -> Awaitable[Response] | None:
        """The handler for an /admin/backends path, or None (the gateway answers 404)."""
        parsed = _parse(request.path)
        if parsed is None:
            return None
        name, action = parsed
        return self._call(request, "GET" if name is None else "POST", name, action)

    @staticmethod
    def serves(path: str) -> bool:
        """Whether `path` is one of these routes (read on the head, before a body is buffered)."""
        return _parse(path) is not None

    async def _call(self, request: Request, method: str, name: str | None, action: str | None) -> Response:
        self._check_access(request)  # before anything else: no backend names to a caller refused
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            raise MethodNotAllowed(f"{request.path} accepts {method} only.")
        if name is None or action is None:
            return Response(200, orjson.dumps({"backends": self._view()}))
        self._check_backend(name)
        try:
            if action == "stop":
                self._control.stop_backend(name)
            else:
                self._control.start_backend(name)
        except LocalBackendError as exc:  # the supervisor is shutting down
            raise ApiError(
                str(exc), status=503, type="service_unavailable", code="supervisor_stopped"
            ) from exc
        message = (
            f"stopping {name}: it stays down until POST {_PREFIX}/{name}/start"
            if action == "stop"
            else f"starting {name}: it serves again once it answers its readiness probe"
        )
        body = {"backend": name, "action": action, "accepted": True, "message": message}
        return Response(202, orjson.dumps(body))

    def _check_access(self, request: Request) -> None:
        check_admin_access(self._gw.operator, request)

    def _check_backend(self, name: str) -> None:
        if name in self._control.names():
            return
        if name in self._gw.config.backends:
            raise BadRequest(
                f"Backend {name!r} is not run by `aifabric up` (it is a remote backend): it can only be "
                "stopped or started on its own machine. Local backends: "
                + (", ".join(self._control.names()) or "none"),
                code="not_a_local_backend",
            )
        raise NotFound(
            f"No backend {name!r} in this fabric. Local backends: "
            + (", ".join(self._control.names()) or "none"),
            code="backend_not_found",
        )

    def _view(self) -> dict[str, dict[str, str | int | None]]:
        """Per backend: the supervisor's state and its process (None once a stopped one has exited: a
        backend marked stopped may still be finishing its last requests), and the gateway's view."""
        healths = self._gw.table.healths
        pids = self._control.pids()
        view: dict[str, dict[str, str | int | None]] = {}
        for name, state in self._control.states().items():
            health = healths.get(name)
            view[name] = {
                "process": state,
                "pid": pids.get(name),
                "state": str(health.state) if health is not None else None,
                "reason": health.reason if health is not None else None,
            }
        return view
