"""Setting up a SQLite file that several processes may open at the same instant.

Two gateway replicas (or a gateway and `aifabric keys`) starting together open the same new file. The
first to switch it to WAL or to create its tables holds a lock that SQLite's busy timeout does not
wait for in every case (changing the journal mode answers SQLITE_BUSY at once), and the other would
fail to start with "database is locked" (seen: 7 of 20 starts of 6 processes at once). The setup is
idempotent, so it is tried again for a while instead.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["SETUP_PATIENCE", "contended", "with_setup_retries"]

SETUP_PATIENCE = 10.0  # seconds: far more than another process's setup of a few milliseconds

T = TypeVar("T")


def contended(exc: sqlite3.Error) -> bool:
    """Whether `exc` is another connection holding the file for a moment (try again), not a fault."""
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def with_setup_retries(
    setup: Callable[[], T],
    *,
    patience: float = SETUP_PATIENCE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`setup()` (which closes what it opened when it fails), tried again while another process holds
    the file, for up to `patience` seconds; any other error at once."""
    deadline = clock() + patience
    while True:
        try:
            return setup()
        except sqlite3.Error as exc:
            if not contended(exc) or clock() >= deadline:
                raise
        sleep(random.uniform(0.01, 0.05))  # apart, so that the processes do not collide in step
