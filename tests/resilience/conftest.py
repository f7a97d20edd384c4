"""Fixtures: fake backends, stopped after the test (the gateway: `start_gateway` in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

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
