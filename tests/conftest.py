"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from aifabric.config.load import load_config_text
from aifabric.testing.gateway import RunningGateway

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
