"""A real gateway with a real local supervisor attached, as `aifabric up` wires them: each backend a
process (the fake backend), for the tests of models on demand and of backends stopped by an operator."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from aifabric.config.schema import FabricConfig
from aifabric.local.launch import ProcessSpec
from aifabric.local.restart import RestartPolicy
from aifabric.local.supervisor import Supervisor
from aifabric.testing.gateway import RunningGateway

__all__ = ["always_on_spec", "attach", "on_demand_spec", "running_supervisor", "supervised_gateway"]

# Restarts within a fraction of a second: a test waits for states, not for the default back-off.
QUICK_RESTARTS = RestartPolicy(base=0.1, max_delay=0.5)


def always_on_spec(name: str, port: int, model: str) -> ProcessSpec:
    """Backend `name`, the fake backend (vLLM's API) serving `model` on `port`, started with the others."""
    argv = (sys.executable, "-m", "aifabric.testing.fake_backend", "--port", str(port), "--model", model)
    return ProcessSpec(name=name, argv=argv, host="127.0.0.1", port=port, ready_path="/health")


def on_demand_spec(name: str, port: int, model: str, *extra: str) -> ProcessSpec:
    """Backend `name`, a fake llama-cpp-python serving `model` on `port`, started on demand;
    `extra`: more fake-backend flags."""
    argv: tuple[str, ...] = (sys.executable, "-m", "aifabric.testing.fake_backend", "--port", str(port))
    argv += ("--kind", "llama-cpp-python", "--model", model, *extra)
    return ProcessSpec(name, argv, "127.0.0.1", port, "/v1/models", on_demand=True)


@contextlib.contextmanager
def running_supervisor(
    specs: Sequence[ProcessSpec], logs: Path, policy: RestartPolicy | None = None
) -> Iterator[Supervisor]:
    """The supervisor of `specs`, started and ready (what is not on demand answers its readiness
    path); stopped on exit."""
    supervisor = Supervisor(list(specs), log_dir=logs, out=io.StringIO(), policy=policy)
    supervisor.start()
    try:
        assert supervisor.wait_ready(timeout=60)
        yield supervisor
    finally:
        supervisor.stop()


def attach(gw: RunningGateway, supervisor: Supervisor) -> None:
    """Wire `supervisor` to the running gateway as `aifabric up` does: its state changes reach the
    gateway, and the gateway's admin routes (stop, start, wake) reach it."""
    gateway = gw.gateway
    assert gateway is not None
    supervisor.on_state = gateway.local_backend_changed
    gw.call(lambda: gateway.attach_local(supervisor))


@contextlib.contextmanager
def supervised_gateway(
    config: FabricConfig, specs: Sequence[ProcessSpec], logs: Path
) -> Iterator[tuple[Supervisor, RunningGateway]]:
    """The supervisor of `specs` started, a probing gateway on `config` with it attached (its state
    changes reach the gateway); both stopped on exit."""
    with running_supervisor(specs, logs) as supervisor:
        gw = RunningGateway(config, probe=True).start()
        try:
            attach(gw, supervisor)
            yield supervisor, gw
        finally:
            gw.stop()
