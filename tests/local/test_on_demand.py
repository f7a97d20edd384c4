"""Models on demand under the supervisor (`local: {start: on_demand, idle_stop, group, exclusive}`): real
processes (the fake backend speaking llama-cpp-python's API) behind a real gateway, official SDK client."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_support import wait_until

from aifabric.config.load import load_config_text
from aifabric.local.supervisor import Supervisor
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port
from supervised import on_demand_spec, supervised_gateway


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[tuple[Supervisor, RunningGateway]]:
    with running_estate(tmp_path) as running:
        yield running


@contextlib.contextmanager
def running_estate(tmp_path: Path, *a_args: str) -> Iterator[tuple[Supervisor, RunningGateway]]:
    """Backends a and b, models on demand, exclusive in group gpu; `a_args`: a's fake-backend flags."""
    pa, pb = free_port(), free_port()
    local = "engine: llama-cpp-python, model: m, start: on_demand, idle_stop: 3s, group: gpu, exclusive: true"
    config = load_config_text(
        f"""\
backends:
  a: {{kind: llama-cpp-python, local: {{{local}, port: {pa}}}}}
  b: {{kind: llama-cpp-python, local: {{{local}, port: {pb}}}}}
roles:
  chat-a: {{kind: chat, targets: [{{backend: a, model: qa}}]}}
  chat-b: {{kind: chat, targets: [{{backend: b, model: qb}}]}}
""",
        "fabric.yaml",
        environ={},
    )
    specs = [on_demand_spec("a", pa, "qa", *a_args), on_demand_spec("b", pb, "qb")]
    with supervised_gateway(config, specs, tmp_path) as running:
        yield running


def ask(gw: RunningGateway, role: str) -> str:
    raw = gw.openai(timeout=90).chat.completions.with_raw_response.create(
        model=role, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    raw.parse()
    return raw.headers["x-aifabric-backend"]


def test_models_start_on_demand_one_per_group_and_stop_when_idle(
    estate: tuple[Supervisor, RunningGateway],
) -> None:
    supervisor, gw = estate
    assert supervisor.states() == {"a": "idle", "b": "idle"}  # nothing started with `up`
    assert gw.state("a") == "asleep" and gw.state("b") == "asleep"

    assert ask(gw, "chat-a") == "a"  # held while a starts, as during loading
    wait_until(lambda: supervisor.states()["a"] == "ready", what="the supervisor to see a ready")

    assert ask(gw, "chat-b") == "b"  # exclusive in group gpu: a is stopped for b
    wait_until(lambda: supervisor.states()["a"] == "idle", what="a stopped for b")
    wait_until(lambda: gw.state("a") == "asleep", what="the gateway to see a asleep")

    # unused for idle_stop (3 s): b is stopped too, and shows as asleep, not down
    wait_until(lambda: supervisor.states()["b"] == "idle", timeout=20, what="b stopped when idle")
    wait_until(lambda: gw.state("b") == "asleep", what="the gateway to see b asleep")
    assert ask(gw, "chat-b") == "b"  # and started again by the next request


def test_a_swap_waits_for_the_requests_the_running_model_is_answering(tmp_path: Path) -> None:
    # a answers after 2.5 s: a request for b arriving meanwhile must not cut a's answer off.
    with running_estate(tmp_path, "--latency-ms", "2500") as (supervisor, gw):
        assert ask(gw, "chat-a") == "a"
        answered: list[str] = []
        failed: list[BaseException] = []

        def ask_a() -> None:
            try:
                answered.append(ask(gw, "chat-a"))
            except BaseException as exc:  # reported below: the assertion names it
                failed.append(exc)

        slow = threading.Thread(target=ask_a)
        slow.start()
        gateway = gw.gateway
        assert gateway is not None
        wait_until(lambda: gateway.checker.healths["a"].in_flight == 1, what="a answering a request")
        assert ask(gw, "chat-b") == "b"  # held until a is done, then a is stopped and b started
        slow.join(timeout=30)
        assert not failed, f"a's request in flight was cut off by the swap: {failed}"
        assert answered == ["a"]
        wait_until(lambda: supervisor.states()["a"] == "idle", what="a stopped for b")
        # b answered: its supervisor sees it ready on its next look (it polls; the gateway probed first)
        wait_until(lambda: supervisor.states()["b"] == "ready", what="the supervisor to see b ready")


def test_a_model_started_with_the_others_and_stopped_when_idle_is_started_again_by_a_request(
    tmp_path: Path,
) -> None:
    # start: always (started by `up`) with idle_stop: once stopped, it is a model on demand like the others.
    port = free_port()
    config = load_config_text(
        f"""\
backends:
  a: {{kind: llama-cpp-python, local: {{engine: llama-cpp-python, model: m, port: {port}, idle_stop: 2s}}}}
roles:
  chat-a: {{kind: chat, targets: [{{backend: a, model: qa}}]}}
""",
        "fabric.yaml",
        environ={},
    )
    always = dataclasses.replace(on_demand_spec("a", port, "qa"), on_demand=False)
    with supervised_gateway(config, [always], tmp_path) as (supervisor, gw):
        assert ask(gw, "chat-a") == "a"
        wait_until(lambda: supervisor.states()["a"] == "idle", timeout=20, what="a stopped when idle")
        wait_until(lambda: gw.state("a") == "asleep", what="the gateway to see a asleep")
        assert ask(gw, "chat-a") == "a"  # started again, the request held meanwhile
        wait_until(lambda: supervisor.states()["a"] == "ready", what="a running again")
