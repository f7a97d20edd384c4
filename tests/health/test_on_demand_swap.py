"""OnDemand's swap in an exclusive group, with a recording supervisor: it waits for the running member's
requests in flight, and a member that never finishes is stopped once the drain time is over."""

from __future__ import annotations

import asyncio

from aifabric.config.load import load_config_text
from aifabric.core import BackendHealth, BackendState
from aifabric.health.engine_sleep import OnDemand

LOCAL = "engine: llama-cpp-python, model: m, start: on_demand, group: gpu, exclusive: true"
CONFIG = load_config_text(
    f"""\
backends:
  a: {{kind: llama-cpp-python, local: {{{LOCAL}, port: 18701}}}}
  b: {{kind: llama-cpp-python, local: {{{LOCAL}, port: 18702}}}}
  c: {{kind: llama-cpp-python, local: {{{LOCAL}, port: 18703}}}}
roles:
  chat-a: {{kind: chat, targets: [{{backend: a, model: qa}}]}}
  chat-b: {{kind: chat, targets: [{{backend: b, model: qb}}]}}
  chat-c: {{kind: chat, targets: [{{backend: c, model: qc}}]}}
""",
    "fabric.yaml",
    environ={},
)


class Supervisor:
    """What OnDemand asks of the supervisor, recorded in order."""

    def __init__(self) -> None:
        self.running = {"a": "ready", "b": "idle", "c": "idle"}
        self.calls: list[str] = []

    def states(self) -> dict[str, str]:
        return dict(self.running)

    def start_backend(self, name: str) -> None:
        self.calls.append(f"start {name}")
        self.running[name] = "starting"

    def idle_backend(self, name: str, why: str) -> None:
        self.calls.append(f"stop {name}")
        self.running[name] = "idle"


def estate() -> tuple[dict[str, BackendHealth], Supervisor]:
    healths = {
        "a": BackendHealth("a", state=BackendState.UP),
        "b": BackendHealth("b", state=BackendState.ASLEEP),
        "c": BackendHealth("c", state=BackendState.ASLEEP),
    }
    return healths, Supervisor()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settled(supervisor: Supervisor, calls: int) -> list[str]:
    """The supervisor's calls once there are `calls` of them (the swap polls every 50 ms)."""
    for _ in range(200):
        if len(supervisor.calls) >= calls:
            break
        await asyncio.sleep(0.025)
    return supervisor.calls


def test_the_swap_waits_for_the_running_members_requests_in_flight() -> None:
    async def scenario() -> list[str]:
        healths, supervisor = estate()
        on_demand = OnDemand(lambda: CONFIG, lambda: healths, supervisor, drain=10.0, clock=Clock())
        healths["a"].in_flight = 1
        held = CONFIG.retry.warmup_wait + 10.0  # as while loading, and the drain time
        assert on_demand.start(["b"]) == held
        assert on_demand.start(["b"]) == held  # a second request joins the same swap
        await asyncio.sleep(0.2)  # four polls, the clock standing still: within the drain time
        assert supervisor.calls == [], "a was stopped with a request in flight"
        healths["a"].in_flight = 0
        calls = await settled(supervisor, 2)
        await on_demand.aclose()
        return calls

    assert asyncio.run(scenario()) == ["stop a", "start b"]


def test_a_member_that_never_finishes_is_stopped_after_the_drain_time() -> None:
    async def scenario() -> list[str]:
        healths, supervisor = estate()
        clock = Clock()
        on_demand = OnDemand(lambda: CONFIG, lambda: healths, supervisor, drain=30.0, clock=clock)
        healths["a"].in_flight = 1  # never finishes
        on_demand.start(["b"])
        await asyncio.sleep(0.2)
        assert supervisor.calls == []
        clock.now += 30.0
        return await settled(supervisor, 2)

    assert asyncio.run(scenario()) == ["stop a", "start b"]


def test_an_idle_member_is_stopped_at_once() -> None:
    async def scenario() -> list[str]:
        healths, supervisor = estate()
        OnDemand(lambda: CONFIG, lambda: healths, supervisor).start(["b"])
        return supervisor.calls  # no await: done before start returned

    assert asyncio.run(scenario()) == ["stop a", "start b"]


def test_swaps_in_one_group_take_turns_and_never_run_two_members() -> None:
    async def scenario() -> list[str]:
        healths, supervisor = estate()
        clock = Clock()
        on_demand = OnDemand(lambda: CONFIG, lambda: healths, supervisor, drain=30.0, clock=clock)
        healths["a"].in_flight = 1
        on_demand.start(["b"])  # waits for a's request
        on_demand.start(["c"])  # waits for b's turn, then for b to serve what it was started for
        await asyncio.sleep(0.1)
        assert supervisor.calls == []
        healths["a"].in_flight = 0
        assert await settled(supervisor, 2) == ["stop a", "start b"]
        healths["a"].state = BackendState.ASLEEP
        healths["b"].state = BackendState.UP  # b loaded, and its held request goes
        healths["b"].in_flight = 1
        await asyncio.sleep(0.2)
        assert supervisor.calls == ["stop a", "start b"], "c took the group while b served its request"
        healths["b"].in_flight = 0
        calls = await settled(supervisor, 4)
        running = [n for n, state in supervisor.running.items() if state != "idle"]
        assert running == ["c"]
        return calls

    assert asyncio.run(scenario()) == ["stop a", "start b", "stop b", "start c"]
