"""Opening one new SQLite file from several processes at once: the usage ledger and the key store are
set up by whichever replica, worker or `aifabric keys` comes first, and none fails because another
held the file for a moment ("database is locked", seen when two replicas started together)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from aifabric.core.sqlite_setup import with_setup_retries
from aifabric.tenancy.keystore import SqliteKeyStore
from aifabric.tenancy.ledger.sqlite import SqliteLedger

PROCESSES = 6


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_locked_file_is_tried_again_until_it_is_free() -> None:
    clock = Clock()
    tries: list[int] = []

    def setup() -> str:
        tries.append(1)
        if len(tries) < 4:
            raise sqlite3.OperationalError("database is locked")
        return "open"

    assert with_setup_retries(setup, clock=clock, sleep=clock.sleep) == "open"
    assert len(tries) == 4 and len(clock.slept) == 3
    assert all(0.01 <= s <= 0.05 for s in clock.slept)


def test_a_file_locked_for_longer_than_the_patience_fails_and_other_errors_at_once() -> None:
    clock = Clock()

    def locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        with_setup_retries(locked, patience=1.0, clock=clock, sleep=clock.sleep)
    assert 1.0 <= clock.now < 1.06

    clock = Clock()

    def broken() -> None:
        raise sqlite3.DatabaseError("file is not a database")

    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        with_setup_retries(broken, clock=clock, sleep=clock.sleep)
    assert clock.slept == []


def _open(kind: str, path: Path, start: Barrier, results: multiprocessing.Queue[str]) -> None:
    start.wait()
    try:
        if kind == "ledger":
            SqliteLedger(path).close()
        else:
            SqliteKeyStore(path).load()
    except Exception as exc:  # the test's report: which error, in which process
        results.put(f"{type(exc).__name__}: {exc}")
    else:
        results.put("ok")


@pytest.mark.parametrize("kind", ["ledger", "keys"])
def test_processes_opening_one_new_file_at_once_all_start(tmp_path: Path, kind: str) -> None:
    # Before: 7 of 20 such starts had a process fail with "database is locked".
    context = multiprocessing.get_context("fork")
    for trial in range(10):
        path = tmp_path / f"{trial}" / f"{kind}.db"
        start = context.Barrier(PROCESSES)
        results: multiprocessing.Queue[str] = context.Queue()
        processes = [
            context.Process(target=_open, args=(kind, path, start, results)) for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
        got = [results.get(timeout=5) for _ in processes]
        assert got == ["ok"] * PROCESSES, f"trial {trial}: {got}"
