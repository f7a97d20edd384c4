"""Who may see and steer the gateway: the operator views and the admin routes.

    keys configured (gateway.api_keys or gateway.admin_keys)   operator views need an admin key
    no key configured at all                                   operator views open; /admin/* loopback only

Operator views are `/health` (not `/health/live` nor `/health/ready`, which process managers and load
balancers poll without a key), `/status`, `/metrics`, `/alerts`, the status page (`/ui`) and
`/admin/*`. They show backend URLs and model ids, and /admin can stop a backend, so an API key is not
enough once keys exist: an admin key is (one of `gateway.admin_keys`, or a key another part of the
gateway vouches for through `admin_scope`, such as a key store key made with `--scope admin`). A
known key without the scope (an application's) is 403, an unknown one 401.

A key is read from `Authorization: Bearer <key>`, `api-key`, `x-api-key`, or HTTP Basic with the key
as the password: a browser opening the status page asks for it (the 401 carries `WWW-Authenticate`)
and then sends it with every call the page makes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable

from aifabric.config.schema import Secret
from aifabric.errors import Forbidden, Unauthorized

__all__ = ["OPEN_HEALTH_PATHS", "OperatorAccess", "is_loopback", "presented_key"]

OPEN_HEALTH_PATHS = frozenset({"/health/live", "/health/ready"})
_CHALLENGE = {"www-authenticate": 'Basic realm="aifabric operator", charset="UTF-8"'}


def is_loopback(client: str) -> bool:
    """Whether a request's peer (`host:port` as the listener records it) is this machine."""
    host = client.rsplit(":", 1)[0].strip("[]") if ":" in client else client
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack listener
    return address.is_loopback


def presented_key(headers: dict[str, str]) -> str:
    """The key a request carries, or "" (never logged, never echoed)."""
    value = headers.get("authorization", "")
    scheme = value[:7].lower()
    if scheme == "bearer ":
        return value[7:].strip()
    if scheme[:6] == "basic ":
        try:
            decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return headers.get("api-key", "") or headers.get("x-api-key", "")


class OperatorAccess:
    """The one check in front of every operator view; `is_admin_key` lets other key stores vouch."""

    def __init__(
        self,
        admin_keys: tuple[Secret, ...],
        *,
        any_key_configured: bool | Callable[[], bool],
        admin_scope: Callable[[str], bool | None] | None = None,
    ) -> None:
        self._keys = [k.reveal().encode() for k in admin_keys if k]
        self._configured = any_key_configured
        self._admin_scope = admin_scope

    @property
    def required(self) -> bool:
        """Whether the operator views need an admin key: once any key exists anywhere."""
        configured = self._configured
        return bool(self._keys) or (configured() if callable(configured) else configured)

    def scope(self, key: str) -> bool | None:
        """True for an admin key, False for a known key without the admin scope, None for a key
        nobody knows. Constant time per configured admin key."""
        if not key:
            return None
        candidate = key.encode("utf-8", "surrogateescape")
        ok = False
        for known in self._keys:
            ok |= hmac.compare_digest(candidate, known)
        if ok:
            return True
        return self._admin_scope(key) if self._admin_scope is not None else None

    def check(self, headers: dict[str, str], client: str, *, admin_route: bool = False) -> None:
        """Raise Unauthorized/Forbidden unless this request may see an operator view (or, with
        `admin_route`, steer a backend)."""
        if not self.required:
            if admin_route and not is_loopback(client):
                raise Forbidden(
                    "The admin routes are open only to clients on this machine when no key is "
                    "configured: call them from the gateway's host, or set gateway.admin_keys and "
                    "send one.",
                    code="admin_loopback_only",
                )
            return
        key = presented_key(headers)
        if not key:
            raise Unauthorized(
                "This operator view needs an admin key (one of gateway.admin_keys): send "
                "`Authorization: Bearer <key>`.",
                code="missing_admin_key",
                headers=dict(_CHALLENGE),
            )
        scope = self.scope(key)
        if scope is False:
            # An application's key may call the API, not see or steer the estate.
            raise Forbidden(
                "This key may not use the operator views: send one of gateway.admin_keys, or a key "
                "made with `aifabric keys create --scope admin`.",
                code="admin_key_required",
            )
        if scope is None:  # a wrong key is not echoed (it may be a real secret)
            raise Unauthorized(
                "The key sent is not an admin key: operator views need one of gateway.admin_keys.",
                code="invalid_admin_key",
                headers=dict(_CHALLENGE),
            )
