"""API keys for the /v1 routes: the master keys of `gateway.api_keys` and the key store's keys.

`check` runs on the request head, before the body is read, and returns the request's `Principal`
(see aifabric.tenancy.keyring for what is refused and how).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from aifabric.config.schema import Secret
from aifabric.tenancy.keyring import KeyRing
from aifabric.tenancy.keys import KeyRecord
from aifabric.tenancy.principal import ANONYMOUS, Principal

__all__ = ["Authenticator"]


class Authenticator:
    def __init__(
        self,
        master: tuple[Secret, ...],
        records: Sequence[KeyRecord] = (),
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._master = master
        self._records = list(records)
        self._wall = wall
        self._required = False
        self._ring = KeyRing(master, self._records)

    @property
    def enabled(self) -> bool:
        return self._ring.enabled

    def update_master(self, master: tuple[Secret, ...]) -> None:
        """A reload of the fabric file changed gateway.api_keys."""
        self._master = master
        self._ring = KeyRing(master, self._records, required=self._required)

    def require_keys(self) -> None:
        """The key store cannot be read: refuse requests without a key rather than let them in."""
        self._required = True
        self._ring = KeyRing(self._master, self._records, required=True)

    def update_records(self, records: Sequence[KeyRecord]) -> None:
        """The key store changed: swap in a new ring (requests in flight keep the principal they got)."""
        self._records = list(records)
        self._required = False
        self._ring = KeyRing(self._master, self._records)

    def check(self, headers: Mapping[str, str]) -> Principal:
        """The request's principal; Unauthorized when its key is missing, wrong or expired."""
        ring = self._ring
        if not ring.enabled:
            return ANONYMOUS  # an open gateway pays no clock read
        return ring.authenticate(headers, self._wall())
