"""Fixtures: a real gateway on a real socket (see aifabric.testing.gateway)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway


@pytest.fixture
def start_gateway() -> Iterator[object]:
    running: list[RunningGateway] = []

    def start(
        yaml_text: str, *, probe: bool = False, environ: dict[str, str] | None = None
    ) -> RunningGateway:
        config = load_config_text(yaml_text, "fabric.yaml", environ=environ or {})
        gw = RunningGateway(config, probe=probe).start()
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
