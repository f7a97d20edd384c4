"""Fixtures: a fake backend (the gateway itself: `start_gateway` in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aifabric.testing.fake_backend import FakeBackend


@pytest.fixture
def fb() -> Iterator[FakeBackend]:
    """One vLLM-shaped fake backend serving `m1`."""
    backend = FakeBackend(kind="vllm", models=("m1",)).start()
    yield backend
    backend.stop()
