"""API keys for the /v1 routes (`gateway.api_keys`): `Authorization: Bearer <key>` or `api-key`."""

from __future__ import annotations

import hmac

from aifabric.config.schema import Secret
from aifabric.errors import Unauthorized

__all__ = ["Authenticator"]


class Authenticator:
    def __init__(self, keys: tuple[Secret, ...]) -> None:
        self._keys = [k.reveal().encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, headers: dict[str, str]) -> None:
        """Raise Unauthorized unless the request carries one of the keys. Constant time per key."""
        if not self._keys:
            return
        value = headers.get("authorization", "")
        if value[:7].lower() == "bearer ":
            presented = value[7:].strip()
        else:
            presented = headers.get("api-key", "") or headers.get("x-api-key", "")
        if not presented:
            raise Unauthorized(
                "Missing API key: send `Authorization: Bearer <key>` (one of gateway.api_keys).",
                code="missing_api_key",
            )
        candidate = presented.encode()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(candidate, key)
        if not ok:
            # Never echo the presented key: it may be a real secret sent to the wrong place.
            raise Unauthorized("Incorrect API key provided.")
