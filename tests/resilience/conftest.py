"""Fixtures: a gateway factory (stopped after the test) and fake backends (stopped after the test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from resilience_support import RunningGateway, load

from aifabric.testing.fake_backend import FakeBackend


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., RunningGateway]]:
    running: list[RunningGateway] = []

    def start(
        yaml_text: str, *, probe: bool = False, environ: dict[str, str] | None = None
    ) -> RunningGateway:
        gw = RunningGateway(load(yaml_text, environ), probe=probe).start()
        running.append(gw)
        return gw

    yield start
    for gw in running:
        gw.stop()


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
