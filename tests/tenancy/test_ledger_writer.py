"""The writer never holds up the request path: a stuck store fills a bounded queue, the overflow is
dropped and counted (and logged), and nothing recorded is lost that was not counted as dropped."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from aifabric.config.load import load_config_text
from aifabric.tenancy.ledger import Ledger, Pending
from aifabric.tenancy.ledger.sqlite import SqliteLedger
from aifabric.tenancy.pricing import Pricing
from aifabric.testing.wait import wait_until

CONFIG = load_config_text(
    "backends: {b: {kind: vllm, url: 'http://127.0.0.1:9/v1'}}\n"
    "roles: {chat: {kind: chat, targets: [{backend: b, model: m}]}}\n",
    "fabric.yaml",
    environ={},
)


def pending(i: int) -> Pending:
    usage = b'"usage":{"prompt_tokens":3,"completion_tokens":4}}'
    return Pending(time.time(), "app", "chat", "b", "m", "/chat/completions", 200, 0.01, f"r{i}", usage)


def test_a_stuck_store_fills_the_queue_and_the_rest_is_dropped_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.db"
    SqliteLedger(path).close()
    ledger = Ledger(lambda: SqliteLedger(path), Pricing.from_config(CONFIG), capacity=100, interval=0.01)
    ledger.start()
    # Another process holds the database: the writer's insert waits for it.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    ledger.record(pending(0))
    wait_until(lambda: ledger.pending == 0, "the writer took the first row and is stuck on the lock")
    started = time.perf_counter()
    with caplog.at_level(logging.ERROR, "aifabric.usage"):
        for i in range(1, 1001):
            ledger.record(pending(i))
    assert time.perf_counter() - started < 0.5  # 1000 records, never waiting for the store
    assert (ledger.pending, ledger.stats.dropped) == (100, 900)
    assert "usage ledger queue full" in caplog.text and "rows dropped" in caplog.text
    holder.execute("ROLLBACK")
    holder.close()
    ledger.close()
    store = SqliteLedger(path)
    try:
        assert store.count() == 101 == 1001 - ledger.stats.dropped
    finally:
        store.close()


def test_the_writer_keeps_up_with_a_burst(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    ledger = Ledger(lambda: SqliteLedger(path), Pricing.from_config(CONFIG), interval=0.05)
    ledger.start()
    for i in range(20000):
        ledger.record(pending(i))
    ledger.close()
    assert (ledger.stats.written, ledger.stats.dropped) == (20000, 0)
    assert ledger.stats.by_key["app"].tokens_out == 4 * 20000


def test_rows_go_in_whole_and_in_order_whatever_the_batch_size(tmp_path: Path) -> None:
    # The store inserts many rows per statement (2^k at a time): odd batch sizes and a batch larger
    # than one statement must come back exactly, in order, with every column as it was written.
    store = SqliteLedger(tmp_path / "u.db")
    pricing = Pricing()
    written = []
    for batch, size in enumerate((1, 3, 700)):
        rows = [
            pricing.row(
                Pending(
                    1_800_000_000.0 + batch + i / 1000,
                    f"k{i % 7}",
                    "chat",
                    "b",
                    "m",
                    "/chat/completions",
                    200 if i % 5 else 429,
                    i / 1e4,
                    f"req-{batch}-{i}",
                    b'"usage":{"prompt_tokens":%d}' % i,
                )
            )
            for i in range(size)
        ]
        store.write(rows)
        written += rows
    assert store.rows() == written
    store.close()
