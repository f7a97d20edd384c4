"""A real gateway with a real local supervisor attached, as `aifabric up` wires them, for the tests of
models on demand: each model a process (the fake backend speaking llama-cpp-python's API)."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from aifabric.config.schema import FabricConfig
from aifabric.local.launch import ProcessSpec
from aifabric.local.supervisor import Supervisor
from aifabric.testing.gateway import RunningGateway

__all__ = ["on_demand_spec", "supervised_gateway"]


def on_demand_spec(name: str, port: int, model: str, *extra: str) -> ProcessSpec:
    """Backend `name`, a fake llama-cpp-python serving `model` on `port`, started on demand;
    `extra`: more fake-backend flags."""
    argv: tuple[str, ...] = (sys.executable, "-m", "aifabric.testing.fake_backend", "--port", str(port))
    argv += ("--kind", "llama-cpp-python", "--model", model, *extra)
    return ProcessSpec(name, argv, "127.0.0.1", port, "/v1/models", on_demand=True)


@contextlib.contextmanager
def supervised_gateway(
    config: FabricConfig, specs: Sequence[ProcessSpec], logs: Path
) -> Iterator[tuple[Supervisor, RunningGateway]]:
    """The supervisor of `specs` started, a probing gateway on `config` with it attached (its state
    changes reach the gateway); both stopped on exit."""
    supervisor = Supervisor(list(specs), log_dir=logs, out=io.StringIO())
    supervisor.start()
    try:
        assert supervisor.wait_ready(timeout=30)  # on demand: nothing to wait for
        gw = RunningGateway(config, probe=True).start()
        try:
            gateway = gw.gateway
            assert gateway is not None
            supervisor.on_state = gateway.local_backend_changed
            gw.call(lambda: gateway.attach_local(supervisor))
            yield supervisor, gw
        finally:
            gw.stop()
    finally:
        supervisor.stop()
