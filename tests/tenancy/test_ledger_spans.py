"""The SQLite ledger finds rows by time through spans of rowids (tenancy.ledger.sqlite), not an index
on `ts`: reports since a moment must be exact however the rows were written (two workers interleaving
their batches, a long stream's row written after later requests' rows), and a ledger written by an
earlier version (with its `ts` index) is read whole and keeps working."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from aifabric.tenancy.ledger import UsageRow
from aifabric.tenancy.ledger.base import GROUPINGS
from aifabric.tenancy.ledger.sqlite import SqliteLedger

T0 = 1_800_000_000.0  # 2027-01-15


def row(ts: float, n: int, key: str = "app") -> UsageRow:
    return UsageRow(
        ts, key, "chat", "b", "m", "/chat/completions", n, 2 * n, False, n / 100, 1.5, 200, f"r{n}"
    )


def expected(rows: list[UsageRow], since: float) -> dict[str, tuple[int, int, int]]:
    """(requests, tokens in, tokens out) per key of the rows at or after `since`, summed here."""
    out: dict[str, tuple[int, int, int]] = {}
    for r in rows:
        if r.ts >= since:
            n, tin, tout = out.get(r.key, (0, 0, 0))
            out[r.key] = (n + 1, tin + r.tokens_in, tout + r.tokens_out)
    return out


def reported(store: SqliteLedger, since: float) -> dict[str, tuple[int, int, int]]:
    return {
        line["key"]: (line["requests"], line["tokens_in"], line["tokens_out"])
        for line in store.summary(since, "key")
    }


def test_reports_since_any_moment_are_exact_whatever_order_two_workers_wrote_in(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    first, second = SqliteLedger(path), SqliteLedger(path)  # two workers, one file
    rng = random.Random(7)
    written: list[UsageRow] = []
    n = 0
    for batch in range(60):
        # Each batch covers about a second, the two workers' batches overlap in time and are written
        # in either order; a few rows are late (a long stream that began minutes earlier).
        rows = []
        for _ in range(rng.randint(1, 40)):
            n += 1
            late = rng.random() < 0.05
            ts = T0 + batch - (rng.uniform(60, 600) if late else rng.uniform(0, 1.5))
            rows.append(row(ts, n, key=rng.choice(["app", "batch-job", "agent"])))
        (first if rng.random() < 0.5 else second).write(rows)
        written += rows
    for since in [
        T0 - 1000,
        T0 - 300,
        T0 - 1,
        T0,
        T0 + 12.5,
        *(rng.uniform(T0 - 700, T0 + 61) for _ in range(40)),
    ]:
        assert reported(first, since) == expected(written, since), since
        assert sorted(first.rows(since)) == sorted(r for r in written if r.ts >= since)
    assert reported(first, T0 + 100) == {}
    assert first.count() == len(written)
    first.close()
    second.close()


def test_a_ledger_written_before_spans_is_read_whole_and_written_on(tmp_path: Path) -> None:
    # The schema as the previous version created it: rows, and an index on ts; no spans.
    path = tmp_path / "usage.db"
    db = sqlite3.connect(path)
    columns = ", ".join(UsageRow._fields)
    db.executescript(
        "CREATE TABLE aifabric_usage (ts REAL NOT NULL, key TEXT NOT NULL, role TEXT NOT NULL, "
        "backend TEXT NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL, tokens_in INTEGER NOT NULL, "
        "tokens_out INTEGER NOT NULL, estimated INTEGER NOT NULL, cost REAL NOT NULL, "
        "latency_ms REAL NOT NULL, status INTEGER NOT NULL, request_id TEXT NOT NULL);"
        "CREATE INDEX aifabric_usage_ts ON aifabric_usage (ts);"
    )
    old = [row(T0 + i * 10, i) for i in range(1, 31)]
    db.executemany(f"INSERT INTO aifabric_usage ({columns}) VALUES ({', '.join('?' * 13)})", old)
    db.commit()
    db.close()

    store = SqliteLedger(path)
    new = [row(T0 + 400 + i, 100 + i) for i in range(5)]
    store.write(new)
    for since in (T0, T0 + 150, T0 + 300, T0 + 301, T0 + 402):
        assert reported(store, since) == expected(old + new, since), since
    assert store.rows() == old + new
    store.close()
    indexes = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    assert ("aifabric_usage_ts",) not in indexes  # gone: it cost more than the row on every insert
    again = SqliteLedger(path)  # opened again: nothing to adopt, nothing counted twice
    assert reported(again, T0) == expected(old + new, T0)
    again.close()


@pytest.mark.parametrize("by", GROUPINGS)
def test_an_empty_ledger_reports_nothing_by_any_grouping(tmp_path: Path, by: str) -> None:
    store = SqliteLedger(tmp_path / "usage.db")
    assert store.summary(0.0, by) == []
    assert store.rows() == []
    store.close()
