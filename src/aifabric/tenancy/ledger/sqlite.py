"""The default ledger: one SQLite file (WAL, so the CLI reads while workers write; a busy timeout, so
several workers of one machine append to the same file)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aifabric.config.money import BudgetPeriod
from aifabric.errors import StateStoreError
from aifabric.tenancy.ledger.base import (
    GROUPINGS,
    INSERT_COLUMNS,
    SPEND_SCHEMA,
    SPEND_SELECT,
    SPEND_UPSERT,
    TABLE,
    LedgerStore,
    Spend,
    SpendDelta,
    spend_deltas,
    spend_rows,
    summary_rows,
    summary_sql,
)
from aifabric.tenancy.ledger.record import COLUMNS, UsageRow

__all__ = ["SqliteLedger"]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
  ts REAL NOT NULL, key TEXT NOT NULL, role TEXT NOT NULL, backend TEXT NOT NULL, model TEXT NOT NULL,
  endpoint TEXT NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
  estimated INTEGER NOT NULL, cost REAL NOT NULL, latency_ms REAL NOT NULL, status INTEGER NOT NULL,
  request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (ts);
"""

_CHUNK_MAX = 256  # rows per INSERT statement, at most

_GROUP_SQL = {g: g for g in GROUPINGS} | {"day": "strftime('%Y-%m-%d', ts, 'unixepoch')"}


class SqliteLedger(LedgerStore):
    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.where = str(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread off: opened by the gateway, then used only by the writer thread.
            self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a crash of the process
            self._db.executescript(_SCHEMA + SPEND_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateStoreError(f"cannot open the usage ledger {self.path}: {exc}") from exc
        self._values = f"({', '.join('?' * len(COLUMNS))})"
        # Rows per INSERT: a power of two that keeps within SQLite's limit of bound variables.
        most = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS)
        self._chunk = 1 << (min(_CHUNK_MAX, most).bit_length() - 1)
        self._inserts: dict[int, str] = {}

    def write(self, rows: Sequence[UsageRow], deltas: SpendDelta | None = None) -> None:
        if deltas is None:
            deltas = spend_deltas(rows)
        with self._db:
            self._insert(rows)
            if deltas:
                self._db.executemany(SPEND_UPSERT.format(p="?"), [(*k, v) for k, v in deltas.items()])

    def _insert(self, rows: Sequence[UsageRow]) -> None:
        """The rows in statements of many rows each. Not `executemany`: the sqlite3 module gives the GIL
        up and takes it back around every statement it steps, and under load each take waits for the
        event loop's thread to let go (a forced switch, two context switches): per row, that cost more
        than the insert itself. Chunks of 2^k rows: a handful of statements, each prepared once."""
        at, total = 0, len(rows)
        while at < total:
            size = min(self._chunk, 1 << ((total - at).bit_length() - 1))
            sql = self._inserts.get(size)
            if sql is None:
                sql = self._inserts[size] = (
                    f"INSERT INTO {TABLE} ({INSERT_COLUMNS}) VALUES {', '.join([self._values] * size)}"
                )
            self._db.execute(sql, list(itertools.chain.from_iterable(rows[at : at + size])))
            at += size

    def spend(self, period: BudgetPeriod, start: float) -> Spend:
        return spend_rows(self._db.execute(SPEND_SELECT.format(p="?"), (period.value, start)).fetchall())

    def summary(self, since: float, by: str) -> list[dict[str, Any]]:
        rows = self._db.execute(summary_sql(_GROUP_SQL[by], "?"), (since,)).fetchall()
        return summary_rows(by, rows)

    def count(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0])

    def rows(self, since: float = 0.0) -> list[UsageRow]:
        """Every row at or after `since`, oldest first."""
        cur = self._db.execute(f"SELECT {INSERT_COLUMNS} FROM {TABLE} WHERE ts >= ? ORDER BY ts", (since,))
        return [UsageRow._make((*r[:8], bool(r[8]), *r[9:])) for r in cur.fetchall()]

    def close(self) -> None:
        self._db.close()
