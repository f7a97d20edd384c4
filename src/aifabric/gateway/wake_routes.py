"""The admin route that wakes a sleeping host by hand: `aifabric wake HOST` is its client.

    POST /admin/hosts/{name}/wake   200 {"host", "woken": true, "how", "by", "alert": "host_woken"}
                                    404 host_not_found (no such host in this gateway's fabric)
                                    409 no_wake_config (the host has no `wake:`)
                                    502 wake_failed (the packet could not be sent, the command failed)

The gateway sends the host's magic packet or runs its command (`PowerManager.wake_by_hand`), raises the
INFO `host_woken` alert naming who woke it ("by hand (aifabric wake)"; WARNING `host_wake_failed` when
the send fails), and probes the host's backends every second until they serve, as after a wake a
request asked for. An admin route like the others (`admin_routes.check_admin_access`): an admin key
when keys are configured, else loopback clients only. It exists under `aifabric serve` and `up` alike.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import unquote

import orjson

from aifabric.alerts.rules import wake_alert
from aifabric.config.schema import FabricConfig, HostConfig
from aifabric.errors import ApiError, MethodNotAllowed, NotFound
from aifabric.gateway.admin_routes import check_admin_access
from aifabric.gateway.operator_access import OperatorAccess
from aifabric.health.power import WakeEvent
from aifabric.http.server import Request, Response

__all__ = ["WAKE_PREFIX", "WakeHost", "WakeRoutes", "host_of"]

WAKE_PREFIX = "/admin/hosts/"
_ACTION = "/wake"


class WakeHost(Protocol):
    """What the route reads of the running gateway (the `Gateway` is one), each at the moment of use:
    a reload replaces `config` and `operator`."""

    @property
    def config(self) -> FabricConfig: ...

    @property
    def operator(self) -> OperatorAccess: ...

    async def wake_by_hand(self, host: HostConfig) -> WakeEvent:
        """Send the host's wake now, raise its alert, probe it until it serves."""
        ...


def host_of(path: str) -> str | None:
    """The host name of a `/admin/hosts/NAME/wake` path, or None when `path` is not one."""
    if not (path.startswith(WAKE_PREFIX) and path.endswith(_ACTION)):
        return None
    name = unquote(path[len(WAKE_PREFIX) : -len(_ACTION)])
    return name if name and "/" not in name else None


class WakeRoutes:
    def __init__(self, gateway: WakeHost) -> None:
        self._gw = gateway

    @staticmethod
    def serves(path: str) -> bool:
        """Whether `path` is this route (read on the head, before a body is buffered)."""
        return host_of(path) is not None

    async def route(self, request: Request) -> Response:
        check_admin_access(self._gw.operator, request)  # first: no host names to a caller refused
        name = host_of(request.path)
        assert name is not None  # the gateway routes only paths `serves` accepts
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.path} accepts POST only.")
        config = self._gw.config
        host = config.hosts.get(name)
        if host is None:
            raise NotFound(
                f"No host {name!r} in this gateway's fabric ({config.source}). Hosts: "
                + (", ".join(config.hosts) or "none"),
                code="host_not_found",
            )
        if host.wake is None:
            raise ApiError(
                f"Host {name!r} has no wake: section in {config.source}: add "
                'wake: {mac: "aa:bb:cc:dd:ee:ff", broadcast: BROADCAST} or wake: {command: "..."} '
                "(and always_on: false), then reload.",
                status=409,
                type="invalid_request_error",
                code="no_wake_config",
            )
        event = await self._gw.wake_by_hand(host)
        alert = wake_alert(event)
        if not event.ok:
            raise ApiError(f"{alert.summary}. Fix: {alert.fix}", status=502, code="wake_failed")
        body = {"host": name, "woken": True, "how": event.how, "by": event.why, "alert": alert.rule}
        return Response(200, orjson.dumps(body))
