"""The default ledger: one SQLite file (WAL, so the CLI reads while workers write; a busy timeout, so
several workers of one machine append to the same file).

Reports select rows by time (`ts >= since`). An index on `ts` cost more than the row itself on every
insert (~1.2 of ~2.7 µs a row: a second B-tree), so rows are found through their rowids instead, the
way a block range index (PostgreSQL's BRIN) does it: each write appends its rows in one transaction and
records one span, (a rowid at or below its first row, the latest `ts` among its rows), in a small
table indexed on that time. Every row with `ts >= since` lies in a span whose latest time is at least
`since`, at or above that span's first rowid; so

    rowid >= (SELECT MIN(first_rowid) FROM spans WHERE max_ts >= since) AND ts >= since

reads a range of rowids (the recent end of the table) and is exact whatever order workers wrote in. A
span is one small row per write (four a second per worker), not one index entry per request. A ledger
written before spans existed gets one span over all its rows and loses its `ts` index when opened.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aifabric.config.money import BudgetPeriod
from aifabric.core.sqlite_setup import with_setup_retries
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

SPANS = f"{TABLE}_spans"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
  ts REAL NOT NULL, key TEXT NOT NULL, role TEXT NOT NULL, backend TEXT NOT NULL, model TEXT NOT NULL,
  endpoint TEXT NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
  estimated INTEGER NOT NULL, cost REAL NOT NULL, latency_ms REAL NOT NULL, status INTEGER NOT NULL,
  request_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {SPANS} (first_rowid INTEGER NOT NULL, max_ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS {SPANS}_max_ts ON {SPANS} (max_ts);
"""
_OLD_INDEX = f"{TABLE}_ts"
# The rowids from which rows at or after a time (the parameter) lie. Every row lies in a span, so when
# no span reaches that time no row does either: past the last rowid, not a scan of the whole table.
_FROM = f"rowid >= (SELECT COALESCE(MIN(first_rowid), {2**63 - 1}) FROM {SPANS} WHERE max_ts >= ?)"

_CHUNK_MAX = 256  # rows per INSERT statement, at most

_GROUP_SQL = {g: g for g in GROUPINGS} | {"day": "strftime('%Y-%m-%d', ts, 'unixepoch')"}


def _adopt_old_rows(db: sqlite3.Connection) -> None:
    """A ledger from before spans: one span covers its rows, and its `ts` index goes (two workers
    opening it at once may both add the span: a duplicate bound changes nothing)."""
    found = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?"
    if db.execute(found, (_OLD_INDEX,)).fetchone() is None:
        return
    with db:
        db.execute(f"INSERT INTO {SPANS} SELECT MIN(rowid), MAX(ts) FROM {TABLE} HAVING COUNT(*) > 0")
        db.execute(f"DROP INDEX IF EXISTS {_OLD_INDEX}")


class SqliteLedger(LedgerStore):
    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.where = str(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Replicas and workers starting together open the same new file (core.sqlite_setup).
            self._db = with_setup_retries(self._connect)
        except (OSError, sqlite3.Error) as exc:
            raise StateStoreError(f"cannot open the usage ledger {self.path}: {exc}") from exc
        self._values = f"({', '.join('?' * len(COLUMNS))})"
        # Rows per INSERT: a power of two that keeps within SQLite's limit of bound variables.
        most = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS)
        self._chunk = 1 << (min(_CHUNK_MAX, most).bit_length() - 1)
        self._inserts: dict[int, str] = {}

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread off: opened by the gateway, then used only by the writer thread.
        db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable across a crash of the process
            db.executescript(_SCHEMA + SPEND_SCHEMA)
            _adopt_old_rows(db)
        except BaseException:
            db.close()
            raise
        return db

    def write(self, rows: Sequence[UsageRow], deltas: SpendDelta | None = None) -> None:
        if deltas is None:
            deltas = spend_deltas(rows)
        with self._db:
            if rows:
                # Read before the insert takes the write lock: another worker may append in between, so
                # this is a bound at or below our first rowid, which is all a span needs.
                first = self._db.execute(f"SELECT COALESCE(MAX(rowid), 0) + 1 FROM {TABLE}").fetchone()[0]
                self._insert(rows)
                latest = max([row.ts for row in rows])
                self._db.execute(f"INSERT INTO {SPANS} VALUES (?, ?)", (first, latest))
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
        rows = self._db.execute(summary_sql(_GROUP_SQL[by], "?", _FROM), (since, since)).fetchall()
        return summary_rows(by, rows)

    def count(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0])

    def rows(self, since: float = 0.0) -> list[UsageRow]:
        """Every row at or after `since`, oldest first."""
        cur = self._db.execute(
            f"SELECT {INSERT_COLUMNS} FROM {TABLE} WHERE ts >= ? AND {_FROM} ORDER BY ts", (since, since)
        )
        return [UsageRow._make((*r[:8], bool(r[8]), *r[9:])) for r in cur.fetchall()]

    def close(self) -> None:
        self._db.close()
