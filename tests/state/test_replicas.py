"""Two gateway replicas sharing one real Redis, in one process: one probes, both route on its health,
an ejection on one holds on the other, and a Redis outage costs no request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from state_support import config

from aifabric.config.schema import FabricConfig
from aifabric.core import BackendState
from aifabric.gateway.app import Gateway
from aifabric.state import StateSync
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import eventually
from redis_support import RedisServer

CHAT = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}


def sync_of(gw: Gateway) -> StateSync:
    assert gw.state_sync is not None, "state is shared: the gateway runs a sync task"
    return gw.state_sync


def state_of(gw: Gateway) -> BackendState:
    return gw.checker.healths["b"].state


@asynccontextmanager
async def replicas(cfg: FabricConfig, n: int = 2) -> AsyncIterator[list[Gateway]]:
    gateways = [Gateway(cfg) for _ in range(n)]
    try:
        for gw in gateways:
            await gw.start("127.0.0.1", 0)
        yield gateways
    finally:
        for gw in gateways:
            await gw.close()


async def leader_and_follower(gateways: list[Gateway]) -> tuple[Gateway, Gateway]:
    await eventually(lambda: sum(sync_of(g).leader for g in gateways) == 1, "one replica holds the lease")
    leader = next(g for g in gateways if sync_of(g).leader)
    follower = next(g for g in gateways if g is not leader)
    await eventually(lambda: sync_of(follower).applied_version is not None, "the follower applied health")
    return leader, follower


async def rounds(gw: Gateway, n: int) -> None:
    """Wait until a follower has applied `n` more snapshots: that many sync rounds have passed."""
    seen: set[str | None] = {sync_of(gw).applied_version}

    def more() -> bool:
        seen.add(sync_of(gw).applied_version)
        return len(seen) > n

    await eventually(more, f"{n} rounds")


async def chat(gw: Gateway) -> httpx.Response:
    assert gw.server is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.server.port}") as client:
        return await client.post("/v1/chat/completions", json=CHAT, timeout=10)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_only_the_lease_holder_probes_and_both_route(redis_server: RedisServer) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url, state=redis_server.url + "?interval=50ms")

        async def scenario() -> None:
            async with replicas(cfg) as gateways:
                leader, follower = await leader_and_follower(gateways)
                await eventually(lambda: state_of(follower) is BackendState.UP, "the follower sees it up")
                await rounds(follower, 10)
                # A prober probes once when it starts (the probe interval is an hour): one probe in all.
                assert backend.count("/health") == 1
                assert sync_of(leader).probing and not sync_of(follower).probing
                assert sync_of(follower).applied_from == sync_of(leader).holder
                for gw in gateways:
                    assert (await chat(gw)).status_code == 200

        run(scenario)


def test_a_backend_going_down_is_seen_by_both(redis_server: RedisServer) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url, state=redis_server.url + "?interval=50ms", probe_interval="100ms")

        async def scenario() -> None:
            async with replicas(cfg) as gateways:
                leader, follower = await leader_and_follower(gateways)
                await eventually(lambda: all(state_of(g) is BackendState.UP for g in gateways), "both up")
                backend.stop()
                await eventually(lambda: state_of(follower) is BackendState.DOWN, "the follower sees it down")
                assert state_of(leader) is BackendState.DOWN
                assert not sync_of(follower).probing, "it learnt it from the lease holder's probe"
                assert follower.metrics.transitions[("b", "down")] == 1, "counted in its own metrics"
                backend.start()
                await eventually(lambda: state_of(follower) is BackendState.UP, "and up again")

        run(scenario)


def test_a_closed_leader_hands_the_lease_over_at_once(redis_server: RedisServer) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        # A ttl of 3 hours: only the resign on close can hand the lease over during this test.
        cfg = config(backend.url, state=redis_server.url + "?interval=1h")

        async def scenario() -> None:
            async with replicas(cfg) as gateways:
                await eventually(lambda: any(sync_of(g).leader for g in gateways), "a first lease holder")
                leader = next(g for g in gateways if sync_of(g).leader)
                follower = next(g for g in gateways if g is not leader)
                await leader.close()
                await sync_of(follower).tick()  # the next round
                assert sync_of(follower).leader and sync_of(follower).probing
                await eventually(lambda: backend.count("/health") == 2, "the new holder probes")

        run(scenario)


def test_an_ejection_on_one_replica_holds_on_the_other(redis_server: RedisServer) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url, state=redis_server.url + "?interval=50ms", consecutive_failures=2)

        async def scenario() -> None:
            async with replicas(cfg) as (first, second):
                target_1 = first.table.routes["r"].targets[0]
                target_2 = second.table.routes["r"].targets[0]
                backend.set(status_override=500)  # real requests fail; probes still pass
                while target_1.detector.state(first.clock()) != "ejected":
                    assert (await chat(first)).status_code >= 500
                await eventually(
                    lambda: target_2.detector.state(second.clock()) == "ejected", "the second ejects it too"
                )
                assert target_2.failures == 0, "without a single failed request of its own"
                ejected_for = target_2.detector.ejected_until() or 0.0
                assert ejected_for - second.clock() > 3000, "for the first replica's ejection time (1h)"

        run(scenario)


def test_redis_down_the_replica_probes_alone_and_keeps_serving(redis_server: RedisServer) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        cfg = config(backend.url, state=redis_server.url + "?interval=50ms")

        async def scenario() -> None:
            async with replicas(cfg) as gateways:
                _, follower = await leader_and_follower(gateways)
                redis_server.stop()
                await eventually(lambda: not sync_of(follower).store_reachable, "the outage is noticed")
                await eventually(lambda: all(sync_of(g).probing for g in gateways), "each probes alone")
                for gw in gateways:
                    assert (await chat(gw)).status_code == 200
                redis_server.start()
                await eventually(
                    lambda: (
                        sum(sync_of(g).leader for g in gateways) == 1
                        and all(sync_of(g).store_reachable for g in gateways)
                    ),
                    "back to one lease holder",
                )
                await eventually(lambda: sum(sync_of(g).probing for g in gateways) == 1, "one prober again")
                for gw in gateways:
                    assert (await chat(gw)).status_code == 200

        run(scenario)
