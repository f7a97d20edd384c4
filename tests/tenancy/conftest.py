"""Fixtures: fake backends, real gateways on real sockets, a real Redis and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tenancy_support  # noqa: F401  (puts tests/state on the path)
from ledger_support import Start
from pg_support import PostgresCluster

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway


@pytest.fixture
def fb() -> Iterator[FakeBackend]:
    """One vLLM-shaped fake backend serving `m1`."""
    backend = FakeBackend(kind="vllm", models=("m1",)).start()
    yield backend
    backend.stop()


@pytest.fixture
def start() -> Iterator[Start]:
    """start(yaml) -> a running gateway; every one still running is stopped after the test."""
    running: list[RunningGateway] = []

    def _start(yaml_text: str, *, source: str = "fabric.yaml") -> RunningGateway:
        gw = RunningGateway(load_config_text(yaml_text, source, environ={})).start()
        running.append(gw)
        return gw

    yield _start
    for gw in running:
        gw.stop()


@pytest.fixture
def backends() -> Iterator[Callable[..., FakeBackend]]:
    """backends(kind=..., models=...) -> a started fake backend, stopped after the test."""
    started: list[FakeBackend] = []

    def make(**switches: object) -> FakeBackend:
        fake = FakeBackend(**switches).start()  # type: ignore[arg-type]
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"
