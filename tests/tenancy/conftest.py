"""Fixtures: one vLLM-shaped fake backend serving `m1`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tenancy_support  # noqa: F401  (puts tests/state on the path)

from aifabric.testing.fake_backend import FakeBackend


@pytest.fixture
def fb() -> Iterator[FakeBackend]:
    backend = FakeBackend(kind="vllm", models=("m1",)).start()
    yield backend
    backend.stop()


@pytest.fixture
def redis_server() -> Iterator[object]:
    from state_support import RedisServer  # tests/state's real redis-server (path set by tenancy_support)

    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()
