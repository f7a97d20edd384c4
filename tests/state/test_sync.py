"""The sync round step by step on the in-process store, with the lease clock and wall clock in hand."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import pytest
from state_support import config

from aifabric.config.schema import FabricConfig
from aifabric.core import BackendState
from aifabric.errors import StateStoreError
from aifabric.health.checker import HealthChecker
from aifabric.http.client import UpstreamClient
from aifabric.routing.table import RoutingTable
from aifabric.state import MemoryStore, StateSync, check_state, open_store
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import eventually


class Replica:
    """What a gateway holds for the sync: its checker, its routing table, its sync task."""

    def __init__(
        self, cfg: FabricConfig, store: MemoryStore, client: UpstreamClient, wall: list[float]
    ) -> None:
        self.checker = HealthChecker(cfg, client)
        self.table = RoutingTable.build(cfg, healths=self.checker.healths)
        self.sync = StateSync(store, self.checker, lambda: self.table, interval=1.0, wall=lambda: wall[0])


def run(scenario: Callable[[UpstreamClient], Awaitable[None]]) -> None:
    async def go() -> None:
        client = UpstreamClient(connect_timeout=1.0)
        try:
            await scenario(client)
        finally:
            await client.aclose()

    asyncio.run(go())


def test_a_holder_that_stalled_past_its_lease_steps_down_and_follows() -> None:
    lease_clock = [0.0]
    wall = [1_700_000_000.0]
    store = MemoryStore(clock=lambda: lease_clock[0])
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url)

        async def scenario(client: UpstreamClient) -> None:
            a, b = Replica(cfg, store, client, wall), Replica(cfg, store, client, wall)
            await a.sync.tick()
            await b.sync.tick()
            assert (a.sync.leader, a.sync.probing, b.sync.leader, b.sync.probing) == (
                True,
                True,
                False,
                False,
            )
            await eventually(lambda: a.checker.healths["b"].state is BackendState.UP, "a's probe")

            lease_clock[0] = 3.5  # a did not renew within its 3 s lease (a stalled loop, a partition)
            await b.sync.tick()
            assert b.sync.leader and b.sync.probing
            await a.sync.tick()
            assert not a.sync.leader and not a.sync.probing
            assert a.sync.applied_from == b.sync.holder
            await a.sync.shutdown()
            await b.sync.shutdown()

        run(scenario)


def test_health_nobody_stands_behind_is_not_applied() -> None:
    wall = [1_700_000_000.0]
    store = MemoryStore()
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url)

        async def scenario(client: UpstreamClient) -> None:
            old = Replica(cfg, store, client, wall)
            await old.sync.tick()
            await eventually(lambda: old.checker.healths["b"].state is BackendState.UP, "probed")
            await old.sync.tick()  # publishes "up"
            await old.sync.shutdown()  # (a previous run that is gone)

            # Someone else holds the lease but has published nothing since, for longer than stale_after.
            assert await store.try_lead("someone-else", 600.0)
            wall[0] += 31.0
            new = Replica(cfg, store, client, wall)
            await new.sync.tick()
            assert not new.sync.leader
            assert new.checker.healths["b"].state is BackendState.UNKNOWN
            assert new.sync.applied_version is None
            await new.sync.shutdown()

        run(scenario)


def test_ejections_are_not_echoed_back_and_forth() -> None:
    wall = [1_700_000_000.0]
    store = MemoryStore()
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url)

        async def scenario(client: UpstreamClient) -> None:
            a, b = Replica(cfg, store, client, wall), Replica(cfg, store, client, wall)
            target_a = a.table.routes["r"].targets[0]
            target_b = b.table.routes["r"].targets[0]
            now = time.monotonic()  # the clock both replicas run on
            assert target_a.detector.adopt_ejection(now + 60.0, 1)  # as if a's requests ejected it
            for _ in range(3):
                await a.sync.tick()
                await b.sync.tick()
            assert target_b.detector.state(now) == "ejected"
            until_b = target_b.detector.ejected_until()
            assert until_b is not None and abs(until_b - (now + 60.0)) < 1.0
            assert target_a.detector.ejections == target_b.detector.ejections == 1

            target_b.detector.record_success(now + 1)  # b saw it serve again: b's own business
            for _ in range(3):
                await a.sync.tick()
                await b.sync.tick()
            assert target_b.detector.state(now + 1) == "ok", "the same ejection is not taken on twice"
            await a.sync.shutdown()
            await b.sync.shutdown()

        run(scenario)


def test_an_operator_stop_holds_on_every_replica_until_started_again() -> None:
    # The stop arrives at the replica that runs the local supervisor, which need not be the lease holder
    # whose probes (of a server still answering) would otherwise overwrite it on every replica.
    wall = [1_700_000_000.0]
    store = MemoryStore()
    why = "stopped by a drill/operator"
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url)

        async def scenario(client: UpstreamClient) -> None:
            leader, supervised = Replica(cfg, store, client, wall), Replica(cfg, store, client, wall)
            await leader.sync.tick()
            await eventually(lambda: leader.checker.healths["b"].state is BackendState.UP, "probed")
            await leader.sync.tick()
            await supervised.sync.tick()
            assert supervised.checker.healths["b"].state is BackendState.UP

            supervised.checker.healths["b"].mark_stopped(why, time.monotonic())  # as Gateway does
            supervised.sync.stopped("b", why)
            for _ in range(2):  # whatever order the rounds come in, the backend still answers probes
                await supervised.sync.tick()
                await leader.sync.tick()
                await leader.checker.probe_one("b")
            for replica in (leader, supervised):
                health = replica.checker.healths["b"]
                assert (health.state, health.reason) == (BackendState.DOWN, why)

            supervised.checker.healths["b"].mark_launching("starting (pid 1)", time.monotonic())
            supervised.sync.started("b")
            await supervised.sync.tick()
            await leader.sync.tick()
            assert leader.checker.healths["b"].stopped is None
            await leader.checker.probe_one("b")
            assert leader.checker.healths["b"].state is BackendState.UP
            await leader.sync.tick()
            await supervised.sync.tick()
            assert supervised.checker.healths["b"].state is BackendState.UP
            await leader.sync.shutdown()
            await supervised.sync.shutdown()

        run(scenario)


def test_a_stop_whose_gateway_died_lapses() -> None:
    wall = [1_700_000_000.0]
    store = MemoryStore()
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url)

        async def scenario(client: UpstreamClient) -> None:
            gone, other = Replica(cfg, store, client, wall), Replica(cfg, store, client, wall)
            gone.sync.stopped("b", "stopped by ops")
            await gone.sync.tick()
            await other.sync.tick()
            assert other.checker.healths["b"].stopped == "stopped by ops"
            await gone.sync.shutdown()  # it never renews the stop again
            wall[0] += other.sync.stale_after + 1
            await other.sync.tick()
            health = other.checker.healths["b"]
            assert health.stopped is None and health.state is not BackendState.DOWN
            await other.sync.shutdown()

        run(scenario)


def test_an_idle_model_on_demand_stays_asleep_across_sync_rounds() -> None:
    """An idle model on demand is stopped by its own gateway (`mark_idle`), not by an operator through
    the store: a sync round that finds no stop in the store must not take it for one lifted."""
    wall = [1_700_000_000.0]
    store = MemoryStore()
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url)

        async def scenario(client: UpstreamClient) -> None:
            replica = Replica(cfg, store, client, wall)
            why = "not running: started when a request needs it"
            replica.checker.healths["b"].mark_idle(why, time.monotonic())  # as Gateway does
            for _ in range(3):
                await replica.sync.tick()
                health = replica.checker.healths["b"]
                assert (health.state, health.reason, health.launching) == (BackendState.ASLEEP, why, None)
            await replica.sync.shutdown()

        run(scenario)


def test_state_memory_shares_nothing_with_one_worker_and_a_directory_with_several() -> None:
    cfg = config("http://127.0.0.1:9/v1")
    assert open_store(cfg, port=8000) is None, "the default: no store, no sync, no cost"
    workers = config("http://127.0.0.1:9/v1", workers=2)
    opened = open_store(workers, port=48123)
    assert opened is not None
    store, interval = opened
    assert store.kind == "local" and str(store.describe()).endswith("/48123)") and interval == 1.0
    asyncio.run(store.close())


def test_redis_options_ride_in_the_url_and_a_bad_one_is_named() -> None:
    opened = open_store(
        config("http://127.0.0.1:9/v1", state="redis://127.0.0.1:1/0?prefix=x:&interval=250ms"), port=0
    )
    assert opened is not None
    store, interval = opened
    assert interval == 0.25 and "prefix 'x:'" in store.describe()
    asyncio.run(store.close())
    with pytest.raises(StateStoreError, match="interval"):
        check_state(config("http://127.0.0.1:9/v1", state="redis://127.0.0.1:1/0?interval=soon"))


def test_redis_state_without_the_redis_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # as if `redis` were not installed
    with pytest.raises(StateStoreError, match=r"pip install 'aifabric\[redis\]'"):
        check_state(config("http://127.0.0.1:9/v1", state="redis://127.0.0.1:6379/0"))
