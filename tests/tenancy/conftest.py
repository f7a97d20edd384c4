"""Fixtures: a real PostgreSQL, the ledger path, and `start` (the `start_gateway` of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tenancy_support  # noqa: F401  (puts tests/state on the path)
from ledger_support import Start
from pg_support import PostgresCluster


@pytest.fixture
def start(start_gateway: Start) -> Start:
    """start(yaml) -> a running gateway, stopped after the test (`start_gateway`, tests/conftest.py)."""
    return start_gateway


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"
