"""The shared ledger: PostgreSQL (`usage: postgresql://USER:PASSWORD@HOST:5432/DB`), for gateway
replicas on several machines that report and budget from one ledger. Needs the `postgres` extra
(psycopg 3). Rows go in with COPY, the fastest way PostgreSQL takes a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aifabric.config.extras import Extra, install_hint
from aifabric.config.money import BudgetPeriod
from aifabric.config.show import redact_url
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
from aifabric.tenancy.ledger.record import UsageRow

__all__ = ["PostgresLedger"]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
  ts DOUBLE PRECISION NOT NULL, key TEXT NOT NULL, role TEXT NOT NULL, backend TEXT NOT NULL,
  model TEXT NOT NULL, endpoint TEXT NOT NULL, tokens_in BIGINT NOT NULL, tokens_out BIGINT NOT NULL,
  estimated BOOLEAN NOT NULL, cost DOUBLE PRECISION NOT NULL, latency_ms DOUBLE PRECISION NOT NULL,
  status INTEGER NOT NULL, request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (ts);
"""

_GROUP_SQL = {g: g for g in GROUPINGS} | {"day": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StateStoreError(
            f"usage: postgresql:// needs psycopg 3: {install_hint(Extra.POSTGRES)}"
        ) from None
    return psycopg


class PostgresLedger(LedgerStore):
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        self.where = redact_url(url)
        psycopg = _psycopg()
        try:
            self._db: Any = psycopg.connect(url, connect_timeout=10)
            with self._db.transaction():
                # Two replicas starting together must not both create the table.
                self._db.execute("SELECT pg_advisory_xact_lock(7203391)")
                self._db.execute(_SCHEMA)
                self._db.execute(SPEND_SCHEMA)
        except psycopg.Error as exc:
            raise StateStoreError(
                f"cannot open the usage ledger at {self.where}: {_first_line(exc)}"
            ) from None

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._db.transaction(), self._db.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def write(self, rows: Sequence[UsageRow], deltas: SpendDelta | None = None) -> None:
        if deltas is None:
            deltas = spend_deltas(rows)
        with self._db.transaction(), self._db.cursor() as cur:
            with cur.copy(f"COPY {TABLE} ({INSERT_COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            if deltas:
                # Sorted: two replicas adding to the same totals lock them in one order (no deadlock).
                cur.executemany(SPEND_UPSERT.format(p="%s"), [(*k, v) for k, v in sorted(deltas.items())])

    def spend(self, period: BudgetPeriod, start: float) -> Spend:
        return spend_rows(self._run(SPEND_SELECT.format(p="%s"), (period.value, start)))

    def summary(self, since: float, by: str) -> list[dict[str, Any]]:
        return summary_rows(by, self._run(summary_sql(_GROUP_SQL[by], "%s"), (since,)))

    def count(self) -> int:
        return int(self._run(f"SELECT COUNT(*) FROM {TABLE}")[0][0])

    def close(self) -> None:
        self._db.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
