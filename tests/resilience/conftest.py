"""Fixtures: fake backends, stopped after the test (the gateway: `start_gateway` in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from netns_support import Partitionable, namespaced_host

from aifabric.testing.fake_backend import FakeBackend


@pytest.fixture
def backend() -> Iterator[Callable[..., FakeBackend]]:
    """`backend(kind="vllm", models=("m1",), **switches)`: a started FakeBackend, stopped at the end."""
    made: list[FakeBackend] = []

    def make(kind: str = "vllm", models: tuple[str, ...] = ("m1",), **switches: Any) -> FakeBackend:
        fb = FakeBackend(kind=kind, models=models, **switches).start()
        made.append(fb)
        return fb

    yield make
    for fb in made:
        fb.stop()


@pytest.fixture
def remote() -> Iterator[Partitionable]:
    """A fake vLLM on a host of its own (a network namespace), whose link the test can cut and heal."""
    yield from namespaced_host()
