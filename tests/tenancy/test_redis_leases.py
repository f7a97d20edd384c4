"""A key's requests in flight counted on a real Redis (tenancy.redis_leases): two processes' leases
together stay within the limit, a given-back lease frees its slot, a held one outlives its lifetime
while its process renews it and a dead process's slot comes free, and Redis away is an error the
admission falls back on (then noticed back)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from aifabric.config.schema import RoleLimits
from aifabric.errors import RateLimited, StateStoreError
from aifabric.tenancy.admission import Admission
from aifabric.tenancy.principal import Principal
from aifabric.tenancy.redis_leases import RedisLeases
from redis_support import RedisServer


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.02)


def test_two_processes_leases_stay_within_the_limit_and_come_back(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        a, b = RedisLeases(redis_server.url), RedisLeases(redis_server.url)
        try:
            first = await a.acquire("app", 2)
            second = await b.acquire("app", 2)
            assert first is not None and second is not None and first != second
            # Two in flight in all: the third is refused, whichever process asks.
            assert await a.acquire("app", 2) is None
            assert await b.acquire("app", 2) is None
            # Another key has limits of its own.
            assert await a.acquire("other", 1) is not None
            b.release("app", second)
            # Given back without waiting: the slot is free once the ZREM lands.
            await eventually(lambda: _taken(a), "B's slot is free again for A")
            assert a.held["app"] and "app" not in b.held
        finally:
            await a.close()
            await b.close()
        # A clean shutdown gives every lease back.
        assert redis_server.client().zcard(_only_set(redis_server, "app")) == 0

    async def _taken(leases: RedisLeases) -> bool:
        return await leases.acquire("app", 2) is not None

    asyncio.run(scenario())


def _only_set(redis_server: RedisServer, name: str) -> str:
    import hashlib

    return "aifabric:conc:" + hashlib.sha256(name.encode()).hexdigest()[:16]


def test_a_renewed_lease_outlives_its_lifetime_and_a_dead_one_expires(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        # Lifetimes of 2 s (renewed every 0.67 s): long enough that a loaded machine's pauses do not
        # expire a live lease, short enough to watch a dead one expire.
        live, dead, other = (RedisLeases(redis_server.url, ttl=2.0) for _ in range(3))
        for leases in (live, dead, other):  # connected, scripts loaded: no first-call delay below
            assert await leases.acquire("warm-up", 3) is not None
        stop = asyncio.Event()
        renewing = asyncio.create_task(live.run(stop))  # `dead` never renews: its process is gone
        try:
            assert await live.acquire("streamer", 1) is not None
            assert await dead.acquire("crashed", 1) is not None
            assert await other.acquire("streamer", 1) is None
            assert await other.acquire("crashed", 1) is None
            # Past its lifetime the dead process's lease expires...
            await eventually(lambda: _took(other, "crashed"), "the dead process's slot comes free", 10)
            # ...and the live one's does not: well past 2 s, renewed meanwhile, it still holds.
            await asyncio.sleep(2.5)
            assert await other.acquire("streamer", 1) is None
        finally:
            stop.set()
            await renewing
            for leases in (live, dead, other):
                await leases.close()

    async def _took(leases: RedisLeases, name: str) -> bool:
        return await leases.acquire(name, 1) is not None

    asyncio.run(scenario())


def test_redis_away_is_an_error_to_fall_back_on_and_its_return_is_noticed(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        leases = RedisLeases(redis_server.url, timeout=0.5)
        try:
            assert await leases.acquire("app", 1) is not None
            redis_server.stop()
            with pytest.raises(StateStoreError, match="concurrency lease"):
                await leases.acquire("app", 1)
            assert not leases.reachable and leases.status()["reachable"] is False
            await leases.renew()  # still away: no exception, still unreachable
            assert not leases.reachable
            redis_server.start()
            await eventually(_renewed(leases), "the return of Redis is noticed")
            assert leases.status() == {"shared": "redis", "reachable": True, "error": ""}
        finally:
            await leases.close()

    def _renewed(leases: RedisLeases) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            await leases.renew()
            return leases.reachable

        return check

    asyncio.run(scenario())


def test_a_request_its_lease_refuses_counts_against_nothing(redis_server: RedisServer) -> None:
    """The admission counts a key's requests per minute before the lease is taken (a round trip, in
    `Ticket.hold`): a request the lease refuses is uncounted again, as any refusal. Redis away, the
    process's own share decides, without a round trip per request."""

    async def scenario() -> None:
        admission = Admission()
        leases = RedisLeases(redis_server.url, timeout=0.5)
        admission.shared_leases = leases
        key = Principal("app", rpm=2, concurrency=1)
        try:
            first = admission.admit(key, "chat", RoleLimits(), {})
            assert first is not None and first.pending is not None
            await first.hold()
            for _ in range(3):  # refused for concurrency: their counts are given back
                refused = admission.admit(key, "chat", RoleLimits(), {})
                assert refused is not None
                with pytest.raises(RateLimited) as busy:
                    await refused.hold()
                assert busy.value.code == "concurrency_limit_exceeded"
            first.release()
            await eventually(lambda: _admitted(admission, key), "the slot given back, the second of 2 rpm")
            # Two admitted in this minute: the rpm limit, not the refusals, decides now.
            with pytest.raises(RateLimited) as spent:
                admission.admit(key, "chat", RoleLimits(), {})
            assert spent.value.code == "rate_limit_exceeded"

            redis_server.stop()
            other = Principal("other", concurrency=1)
            ticket = admission.admit(other, "chat", RoleLimits(), {})
            assert ticket is not None
            await ticket.hold()  # Redis away: this process's share (1 of 1) admits it
            assert admission.in_flight == {"other": 1} and not leases.reachable
            with pytest.raises(RateLimited):  # decided at once, in-process: no lease pending
                admission.admit(other, "chat", RoleLimits(), {})
            ticket.release()
            assert admission.in_flight == {}
        finally:
            await leases.close()

    async def _admitted(admission: Admission, key: Principal) -> bool:
        ticket = admission.admit(key, "chat", RoleLimits(), {})
        assert ticket is not None
        try:
            await ticket.hold()
        except RateLimited:
            return False
        return True

    asyncio.run(scenario())


BUSY = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
repeat
  t = redis.call('TIME')
until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= until_
return 1
"""


def test_a_lease_whose_request_left_during_the_round_trip_is_not_kept(redis_server: RedisServer) -> None:
    """A client that goes away while its request waits for Redis: the lease the script still adds
    afterwards would be held by no one until it expires. It is removed instead."""

    async def scenario() -> None:
        leases, other = RedisLeases(redis_server.url), RedisLeases(redis_server.url)
        busy = redis_server.client()
        try:
            assert await leases.acquire("app", 1) is not None  # connections and script loaded
            leases.release("app", next(iter(leases.held["app"])))
            await eventually(lambda: _free(other), "the first lease given back")
            # Redis runs one script at a time: a busy one holds the next request's script back.
            blocker = asyncio.get_running_loop().run_in_executor(None, busy.eval, BUSY, 0, 600_000)
            await asyncio.sleep(0.15)
            waiting = asyncio.create_task(leases.acquire("app", 1))
            await asyncio.sleep(0.15)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await blocker
            # The script ran once Redis was free; the lease it added is gone again.
            await eventually(lambda: _free(other), "the slot is free for another process", 5)
            assert leases.held == {}
        finally:
            busy.close()
            await leases.close()
            await other.close()

    async def _free(leases: RedisLeases) -> bool:
        lease = await leases.acquire("app", 1)
        if lease is None:
            return False
        leases.release("app", lease)
        await asyncio.sleep(0.05)  # the give-back lands before the next check
        return True

    asyncio.run(scenario())
