"""The ledger's storage interface: append rows in batches, sum spend for budgets, report usage.

Two stores implement it: SQLite (one file, the default; several workers of one machine share it) and
PostgreSQL (replicas on several machines share one). Both keep two tables:

    aifabric_usage   one row per request, the columns of `UsageRow`; time in seconds since the epoch (UTC)
    aifabric_spend   cost per (period, period start, "key"|"backend", name), added to in the same
                     transaction as the rows: what budgets read every few seconds, a handful of rows
                     however large the ledger grows (summing the ledger itself would scan a month of it)
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from aifabric.config.money import BudgetPeriod, period_start
from aifabric.tenancy.ledger.record import COLUMNS, UsageRow

__all__ = ["GROUPINGS", "LedgerStore", "Spend", "SpendDelta", "spend_deltas"]

# `aifabric usage --by ...`: the one list of what usage can be grouped by.
GROUPINGS = ("key", "role", "backend", "model", "day")

TABLE = "aifabric_usage"
SPEND_TABLE = "aifabric_spend"
INSERT_COLUMNS = ", ".join(COLUMNS)

# (period, its start, "key" or "backend", name) -> cost to add
SpendDelta = dict[tuple[str, float, str, str], float]

# Spend since a moment, per key and per backend: what budgets are checked against.
Spend = tuple[dict[str, float], dict[str, float]]


class LedgerStore(abc.ABC):
    """One connection's worth of ledger; used from one thread at a time (the writer's, or a CLI's)."""

    kind: str = ""
    where: str = ""  # for messages: the file, or the URL with its password masked

    @abc.abstractmethod
    def write(self, rows: Sequence[UsageRow], deltas: SpendDelta | None = None) -> None:
        """Append rows, and add their cost to the spend table (`deltas`, computed from the rows when
        not given), in one transaction."""

    @abc.abstractmethod
    def spend(self, period: BudgetPeriod, start: float) -> Spend:
        """Cost per key and per backend in the `period` that began at `start`."""

    @abc.abstractmethod
    def summary(self, since: float, by: str) -> list[dict[str, Any]]:
        """Requests, tokens, cost, estimated and failed rows since `since`, grouped `by` (GROUPINGS)."""

    @abc.abstractmethod
    def count(self) -> int:
        """Every row: for tests and `aifabric usage`'s footer."""

    @abc.abstractmethod
    def close(self) -> None: ...


def summary_sql(group: str, since_param: str, also: str = "") -> str:
    """The usage report's query over `group` (a column, or an expression for days); `also`: a further
    condition on the rows (the SQLite store's bound on rowids)."""
    where = f"ts >= {since_param}" + (f" AND {also}" if also else "")
    return (
        f"SELECT {group} AS grp, COUNT(*), COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), "
        "COALESCE(SUM(cost), 0), "
        "COALESCE(SUM(CASE WHEN estimated THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) "
        f"FROM {TABLE} WHERE {where} GROUP BY grp ORDER BY grp"
    )


def summary_rows(by: str, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [
        {
            by: str(r[0]),
            "requests": int(r[1]),
            "tokens_in": int(r[2]),
            "tokens_out": int(r[3]),
            "cost": float(r[4]),
            "estimated": int(r[5]),
            "errors": int(r[6]),
        }
        for r in rows
    ]


def spend_deltas(rows: Sequence[UsageRow]) -> SpendDelta:
    """What a batch adds to each key's and backend's spend, per period it falls in."""
    # One dict update per row (the batch's cost per hour, key and backend), then per distinct entry
    # the periods it falls in: a batch spans a fraction of a second and a handful of keys.
    by_hour: dict[tuple[int, str, str], float] = {}
    for row in rows:
        cost = row.cost
        if cost:  # free models (the usual local case) cost no spend bookkeeping at all
            entry = (int(row.ts // 3600), row.key, row.backend)
            by_hour[entry] = by_hour.get(entry, 0.0) + cost
    deltas: SpendDelta = {}
    for (hour, key, backend), cost in by_hour.items():
        for period in BudgetPeriod:
            start = period_start(period, hour * 3600.0)
            k = (period.value, start, "key", key)
            deltas[k] = deltas.get(k, 0.0) + cost
            if backend:
                b = (period.value, start, "backend", backend)
                deltas[b] = deltas.get(b, 0.0) + cost
    return deltas


SPEND_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {SPEND_TABLE} (
  period TEXT NOT NULL, start DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
  cost DOUBLE PRECISION NOT NULL, PRIMARY KEY (period, start, kind, name)
);
"""
SPEND_UPSERT = (
    f"INSERT INTO {SPEND_TABLE} (period, start, kind, name, cost) VALUES ({{p}}, {{p}}, {{p}}, {{p}}, {{p}}) "
    f"ON CONFLICT (period, start, kind, name) DO UPDATE SET cost = {SPEND_TABLE}.cost + excluded.cost"
)
SPEND_SELECT = f"SELECT kind, name, cost FROM {SPEND_TABLE} WHERE period = {{p}} AND start = {{p}}"


def spend_rows(rows: Sequence[Sequence[Any]]) -> Spend:
    keys: dict[str, float] = {}
    backends: dict[str, float] = {}
    for kind, name, cost in rows:
        (keys if kind == "key" else backends)[str(name)] = float(cost or 0.0)
    return keys, backends
