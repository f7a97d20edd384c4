"""Fixtures shared by every test directory.

Every test run keeps its own data and state directories: the default key store (`$XDG_DATA_HOME/
aifabric/keys.db`) and usage ledger (`$XDG_STATE_HOME/aifabric/usage.db`) of the developer running the
suite must neither change nor be read by it (a key made there by hand would close every test gateway).
Set at import, so subprocesses inherit them too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aifabric.config.load import load_config_text
from aifabric.native import check as native_check
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from redis_support import RedisServer

os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="aifabric-test-data-")
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="aifabric-test-state-")


def pytest_sessionstart(session: pytest.Session) -> None:
    """A compiled module older than its source would test yesterday's code: stop and say so."""
    status = native_check()
    if status.stale:
        pytest.exit(f"{status.summary} (the suite tests the code as it is)", returncode=4)


# start_gateway(yaml_text, *, probe=False, environ=None, port=0) -> a started RunningGateway
StartGateway = Callable[..., RunningGateway]


@pytest.fixture
def start_gateway() -> Iterator[StartGateway]:
    """A factory of real gateways on real sockets (aifabric.testing.gateway), each stopped after the
    test. The fabric text is loaded as `fabric.yaml` with only `environ` as its environment."""
    running: list[RunningGateway] = []

    def start(
        yaml_text: str, *, probe: bool = False, environ: dict[str, str] | None = None, port: int = 0
    ) -> RunningGateway:
        config = load_config_text(yaml_text, "fabric.yaml", environ=environ or {})
        gw = RunningGateway(config, probe=probe, port=port).start()
        running.append(gw)
        return gw

    yield start
    for gw in running:
        gw.stop()


@pytest.fixture
def fb() -> Iterator[FakeBackend]:
    """One vLLM-shaped fake backend serving `m1`."""
    backend = FakeBackend(kind="vllm", models=("m1",)).start()
    yield backend
    backend.stop()


@pytest.fixture
def backend() -> Iterator[Callable[..., FakeBackend]]:
    """`backend(kind="vllm", models=("m1",), **switches)`: a started FakeBackend, stopped at the end."""
    made: list[FakeBackend] = []

    def make(kind: str = "vllm", models: tuple[str, ...] = ("m1",), **switches: Any) -> FakeBackend:
        fake = FakeBackend(kind=kind, models=models, **switches).start()
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real `redis-server` of its own (unix socket, nothing saved), removed after the test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()
