"""Keeping a running gateway's keys current: poll the store's version, reload the records on change.

One cheap read a second per process (see tenancy.keystore), done in a thread so a slow disk or a
stalled Redis never blocks the event loop. When the store cannot be read the gateway keeps the keys
it last read, says so once in the log and in `status`, and says so again when the store is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aifabric.errors import StateStoreError
from aifabric.tenancy.keys import KeyRecord
from aifabric.tenancy.keystore import KeyStore

__all__ = ["KEY_POLL_INTERVAL", "KeyWatchStatus", "KeyWatcher"]

log = logging.getLogger("aifabric.tenancy")

KEY_POLL_INTERVAL = 1.0  # seconds: a changed key holds everywhere well within the promised 5 s


@dataclass(slots=True)
class KeyWatchStatus:
    store: str  # where the keys live, safe to show (no password)
    keys: int = 0  # records last read (revoked ones included)
    reachable: bool = True
    error: str = ""  # why the last read failed, when it did

    def to_dict(self) -> dict[str, object]:
        return {"store": self.store, "keys": self.keys, "reachable": self.reachable, "error": self.error}


class KeyWatcher:
    def __init__(
        self,
        store: KeyStore,
        on_change: Callable[[list[KeyRecord]], None],
        *,
        interval: float = KEY_POLL_INTERVAL,
    ) -> None:
        self._store = store
        self._on_change = on_change
        self._interval = interval
        self._version: str | None = None
        self.status = KeyWatchStatus(store.describe())

    def poll(self) -> list[KeyRecord] | None:
        """Blocking: the records when the version moved since the last poll, else None."""
        version = self._store.version()
        if version == self._version:
            return None
        records = self._store.load()
        self._version = version
        return records

    async def refresh(self) -> None:
        """One round: read the version (in a thread), apply new records. Never raises for the store."""
        try:
            records = await asyncio.to_thread(self.poll)
        except StateStoreError as exc:
            if self.status.reachable:
                log.warning("key store unreachable, keeping the %d keys last read: %s", self.status.keys, exc)
            self.status.reachable = False
            self.status.error = str(exc)
            return
        if not self.status.reachable:
            log.warning("key store reachable again: %s", self.status.store)
        self.status.reachable = True
        self.status.error = ""
        if records is not None:
            self.status.keys = len(records)
            self._on_change(records)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    def close(self) -> None:
        self._store.close()
