"""The ledger's writer: a bounded queue the request path appends to, drained by one thread in batches.

    request path --record(Pending)--> deque (bounded: full -> dropped, counted, logged; never waits)
    writer thread, every `interval`: drain -> rows (tokens, cost: Pricing.row) -> store.write(batch)
                                     -> budgets.add(rows); every `refresh`: budgets.refresh(store)
    close(): the thread drains what is left and closes the store (so a clean stop loses nothing)

A store that fails (PostgreSQL restarting) is reopened on the next round; the rows wait in the queue
meanwhile, within its bound.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aifabric.tenancy.ledger.base import LedgerStore, SpendDelta, spend_deltas
from aifabric.tenancy.ledger.record import Pending, UsageRow

if TYPE_CHECKING:  # both import the ledger's records: only types here, no import cycle
    from aifabric.tenancy.budget import BudgetTracker
    from aifabric.tenancy.pricing import Pricing

__all__ = ["KeyTotals", "Ledger"]

log = logging.getLogger("aifabric.usage")

CAPACITY = 100_000  # pending rows: ~20 MB at worst, minutes of full-speed traffic while a store is away
MAX_KEYS = 256  # distinct key names in /metrics; the rest are summed under "other"


@dataclass
class KeyTotals:
    """Totals per key since the gateway started, for /metrics."""

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0


@dataclass
class LedgerStats:
    written: int = 0
    dropped: int = 0
    write_failures: int = 0
    last_error: str = ""
    by_key: dict[str, KeyTotals] = field(default_factory=dict)


class Ledger:
    def __init__(
        self,
        open_store: Callable[[], LedgerStore],
        pricing: Pricing,
        *,
        budgets: BudgetTracker | None = None,
        capacity: int = CAPACITY,
        interval: float = 0.25,
        refresh: float = 2.0,
    ) -> None:
        self._open = open_store
        self.pricing = pricing
        self.budgets = budgets
        self.capacity = capacity
        self.interval = interval
        self.refresh_every = refresh
        self.stats = LedgerStats()
        self._queue: collections.deque[Pending] = collections.deque()
        self._stop = threading.Event()
        # Not `_thread`: mypyc (aifabric.native) would name its C field `__thread`, a keyword of C.
        self._writer: threading.Thread | None = None
        self._store: LedgerStore | None = None
        self.where = ""

    # -- the request path --------------------------------------------------------------------------

    def record(self, pending: Pending) -> None:
        """Queue one request's usage. Never blocks: over capacity the row is dropped and counted."""
        if len(self._queue) >= self.capacity:
            self.stats.dropped += 1
            if self.stats.dropped in (1, 10, 100, 1000) or self.stats.dropped % 10000 == 0:
                log.error(
                    "usage ledger queue full (%d rows waiting for %s): %d rows dropped so far",
                    self.capacity,
                    self.where or "the store",
                    self.stats.dropped,
                )
            return
        self._queue.append(pending)

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store (raising StateStoreError when it cannot be used) and start the writer."""
        self._store = self._open()
        self.where = self._store.where
        if self.budgets is not None:
            self.budgets.refresh(self._store)
        self._writer = threading.Thread(target=self._run, name="aifabric-usage-ledger", daemon=True)
        self._writer.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then close the store."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout)
            self._writer = None

    # -- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self.pricing.tokenizers.warm()
        last_refresh = time.monotonic()
        while True:
            stopping = self._stop.wait(self.interval)
            self._drain()
            if self.budgets is not None and time.monotonic() - last_refresh >= self.refresh_every:
                last_refresh = time.monotonic()
                self._guard(lambda store: self.budgets.refresh(store) if self.budgets else None)
            if stopping and not self._queue:
                break
            if stopping and self._store is None:
                break  # the store is away at shutdown: what is queued cannot be written
        if self._store is not None:
            self._store.close()
            self._store = None

    def _drain(self) -> None:
        while self._queue:
            batch: list[Pending] = []
            queue = self._queue
            for _ in range(min(len(queue), 5000)):
                batch.append(queue.popleft())
            row = self.pricing.row
            rows = [row(p) for p in batch]
            deltas = spend_deltas(rows)
            if not self._guard(functools.partial(_write, rows=rows, deltas=deltas)):
                # Back to the front, in order, within the bound; then wait a round.
                room = max(0, self.capacity - len(queue))
                self.stats.dropped += len(rows) - min(room, len(batch))
                queue.extendleft(reversed(batch[: min(room, len(batch))]))
                return
            self.stats.written += len(rows)
            self._count(rows)
            if self.budgets is not None:
                self.budgets.add_spend(deltas)

    def _guard(self, work: Callable[[LedgerStore], object]) -> bool:
        try:
            if self._store is None:
                self._store = self._open()
            work(self._store)
            return True
        except Exception as exc:  # the store went away: reopen next round, keep the rows
            self.stats.write_failures += 1
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if message != self.stats.last_error:
                log.error("usage ledger %s: %s (rows are kept and retried)", self.where, message)
            self.stats.last_error = message
            if self._store is not None:
                with contextlib.suppress(Exception):  # already broken
                    self._store.close()
                self._store = None
            return False

    def _count(self, rows: list[UsageRow]) -> None:
        by_key = self.stats.by_key
        for row in rows:
            totals = by_key.get(row.key)
            if totals is None:
                name = row.key if len(by_key) < MAX_KEYS else "other"
                totals = by_key.setdefault(name, KeyTotals())
            totals.requests += 1
            totals.tokens_in += row.tokens_in
            totals.tokens_out += row.tokens_out
            totals.cost += row.cost


def _write(store: LedgerStore, *, rows: list[UsageRow], deltas: SpendDelta) -> None:
    store.write(rows, deltas)
