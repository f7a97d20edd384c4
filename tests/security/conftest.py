"""A real PostgreSQL for the usage ledger's URL (tests/tenancy's cluster helper, shared)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "tenancy"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    from pg_support import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()
