"""From a presented API key to its `Principal`: one sha256 and one dict lookup, on the request head.

A `KeyRing` is an immutable snapshot of the keys a gateway honours: the master keys of the fabric file
(gateway.api_keys) and the key store's records. The watcher builds a new ring when the store changes
and the gateway swaps it whole, like the routing table: the request path never waits for a lock.

    no master key, no record at all       -> every request is ANONYMOUS (an open gateway, as before)
    otherwise                             -> a key is required:
        missing                           401 missing_api_key
        unknown, revoked                  401 invalid_api_key (never says which, never echoes it)
        expired, rotated past its grace   401 expired_api_key
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aifabric.config.schema import Secret
from aifabric.errors import Unauthorized
from aifabric.tenancy.keys import KeyRecord
from aifabric.tenancy.principal import ANONYMOUS, MASTER, Principal

__all__ = ["KeyRing", "missing_key_message", "presented_key"]


_SEEN_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    not_after: float  # epoch seconds; inf for a key that does not expire


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request carries: `Authorization: Bearer K` (OpenAI), `x-api-key: K` (Anthropic) or
    `api-key: K` (Azure OpenAI clients); "" when none."""
    value = headers.get("authorization", "")
    if value.startswith("Bearer ") or value[:7].lower() == "bearer ":  # the usual spelling: no copies
        return value[7:].strip()
    return headers.get("x-api-key", "") or headers.get("api-key", "")


def missing_key_message(*, anthropic: bool = False) -> str:
    """The 401's words for a request without a key, naming the header its API's clients send
    (`anthropic`: Anthropic's Messages API, whose SDKs send `x-api-key`)."""
    how = (
        "`x-api-key: <key>` (or `Authorization: Bearer <key>`)"
        if anthropic
        else "`Authorization: Bearer <key>`"
    )
    return f"Missing API key: send {how} (a key of gateway.api_keys, or one made by `aifabric keys create`)."


class KeyRing:
    def __init__(
        self, master: Sequence[Secret] = (), records: Sequence[KeyRecord] = (), *, required: bool = False
    ) -> None:
        entries: dict[str, _Entry] = {}
        for key in master:
            if key:
                entries[_digest(key.reveal())] = _Entry(MASTER, math.inf)
        for record in records:
            if record.revoked is not None:
                continue
            principal = record.principal()
            expires = record.expires if record.expires is not None else math.inf
            entries[record.key_hash] = _Entry(principal, expires)
            if record.previous_hash and record.previous_until is not None:
                grace = _Entry(principal, min(expires, record.previous_until))
                entries.setdefault(record.previous_hash, grace)
        self._entries = entries
        # Keys already seen valid, by the presented string: a client's next request skips the sha256
        # (a dict lookup instead, ~1 us less). Only valid keys go in, bounded; a new ring (any change
        # in the store) starts empty, so a revoked key is never served from here.
        self._seen: dict[str, _Entry] = {}
        # Revoked records count: revoking the last key must not open the gateway to everyone.
        # `required`: the store could not be read, so absence of records proves nothing.
        self.enabled = bool(entries) or bool(records) or required
        self.size = len(records)

    def authenticate(self, headers: Mapping[str, str], now: float) -> Principal:
        """The principal of the request's key (`now`: epoch seconds); Unauthorized otherwise."""
        if not self.enabled:
            return ANONYMOUS
        presented = presented_key(headers)
        if not presented:
            raise Unauthorized(missing_key_message(), code="missing_api_key")
        entry = self._seen.get(presented)
        if entry is None:
            entry = self._entries.get(_digest(presented))
            if entry is None:
                # Never echo the presented key: it may be a real secret sent to the wrong place.
                raise Unauthorized("Incorrect API key provided.")
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            self._seen[presented] = entry
        if now >= entry.not_after:
            raise Unauthorized(
                f"The API key '{entry.principal.name}' has expired (or was rotated and its grace period "
                "is over); ask the operator for a new one.",
                code="expired_api_key",
            )
        return entry.principal


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
