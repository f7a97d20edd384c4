"""The store contract, held by every store: memory, local (flock + files), Redis (a real redis-server)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from aifabric.errors import StateStoreError
from aifabric.state import LocalStore, MemoryStore, RedisStore, StateStore
from redis_support import RedisServer

Pair = tuple[StateStore, StateStore]


@pytest.fixture(params=["memory", "local", "redis"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    """Two handles on one shared state, as two gateways would hold them."""
    if request.param == "memory":
        store = MemoryStore()
        yield store, store
    elif request.param == "local":
        yield LocalStore(tmp_path / "state"), LocalStore(tmp_path / "state")
    else:
        server = RedisServer().start()
        try:
            yield RedisStore(server.url), RedisStore(server.url)
        finally:
            server.cleanup()


def run(pair: Pair, scenario: Callable[[StateStore, StateStore], Awaitable[None]]) -> None:
    async def go() -> None:
        try:
            await scenario(*pair)
        finally:
            for store in pair:
                await store.close()

    asyncio.run(go())


def test_one_holder_at_a_time_and_resign_hands_over(pair: Pair) -> None:
    async def scenario(a: StateStore, b: StateStore) -> None:
        assert await a.try_lead("gw-a", 5.0)
        assert not await b.try_lead("gw-b", 5.0)
        assert await a.try_lead("gw-a", 5.0), "the holder renews its own lease"
        assert not await b.try_lead("gw-b", 5.0)
        await b.resign("gw-b")  # not the holder: changes nothing
        assert not await b.try_lead("gw-b", 5.0)
        await a.resign("gw-a")
        assert await b.try_lead("gw-b", 5.0), "a resigned lease is free at once"
        assert not await a.try_lead("gw-a", 5.0)

    run(pair, scenario)


def test_health_is_published_only_by_the_lease_holder(pair: Pair) -> None:
    async def scenario(a: StateStore, b: StateStore) -> None:
        assert await a.read_health() is None
        assert await a.try_lead("gw-a", 5.0)
        assert not await b.publish_health("gw-b", {"x": {"state": "down"}}, 1000.0)
        assert await b.read_health() is None

        assert await a.publish_health("gw-a", {"x": {"state": "up"}}, 1000.0)
        first = await b.read_health()
        assert first is not None
        assert (first.holder, first.published_at, first.backends) == ("gw-a", 1000.0, {"x": {"state": "up"}})
        again = await b.read_health()
        assert again is not None and again.version == first.version, "no publish, same version"

        assert await a.publish_health("gw-a", {"x": {"state": "down"}}, 1001.0)
        second = await b.read_health()
        assert second is not None and second.version != first.version
        assert second.backends == {"x": {"state": "down"}}

    run(pair, scenario)


def test_ejections_later_until_wins_and_expired_ones_are_gone(pair: Pair) -> None:
    async def scenario(a: StateStore, b: StateStore) -> None:
        now = time.time()
        await a.publish_ejection("r/b/m", now + 100, 1)
        await b.publish_ejection("r/b/m", now + 50, 4)  # shorter: the longer ejection stands
        seen = await b.read_ejections(now)
        assert (seen["r/b/m"].until, seen["r/b/m"].count) == (now + 100, 1)

        await b.publish_ejection("r/b/m", now + 200, 2)
        await a.publish_ejection("r/c/m", now + 10, 1)
        seen = await a.read_ejections(now)
        assert {k: (e.until, e.count) for k, e in seen.items()} == {
            "r/b/m": (now + 200, 2),
            "r/c/m": (now + 10, 1),
        }
        assert set(await a.read_ejections(now + 150)) == {"r/b/m"}
        assert await b.read_ejections(now + 300) == {}

    run(pair, scenario)


def test_stops_are_shared_renewed_cleared_and_lapse(pair: Pair) -> None:
    async def scenario(a: StateStore, b: StateStore) -> None:
        now = time.time()
        assert await b.read_stops(now) == {}
        await a.publish_stop("emb", "stopped by a drill/operator", now + 30)
        assert await b.read_stops(now) == {"emb": "stopped by a drill/operator"}
        await a.publish_stop("emb", "stopped by a drill/operator", now + 60)  # renewed
        await b.publish_stop("chat", "stopped by ops", now + 10)
        assert await a.read_stops(now + 45) == {"emb": "stopped by a drill/operator"}, "chat lapsed"
        await b.clear_stop("emb")
        assert await a.read_stops(now) == {"chat": "stopped by ops"}
        await a.clear_stop("never-stopped")  # harmless
        assert await a.read_stops(now + 100) == {}

    run(pair, scenario)


def test_config_announcements_are_shared_and_the_latest_wins(pair: Pair) -> None:
    async def scenario(a: StateStore, b: StateStore) -> None:
        assert await b.read_config() is None
        await a.publish_config('{"version": "v1", "by": "gw-a"}')
        assert await b.read_config() == '{"version": "v1", "by": "gw-a"}'
        await b.publish_config('{"version": "v2", "by": "gw-b"}')
        assert await a.read_config() == '{"version": "v2", "by": "gw-b"}'

    run(pair, scenario)


def test_members_are_shared_renewed_forgotten_when_stale_and_leave(pair: Pair) -> None:
    async def scenario(a: StateStore, b: StateStore) -> None:
        assert await b.read_members(since=0.0) == {}
        await a.publish_member("host/1/aa", '{"report": 1}', 1000.0)
        await b.publish_member("host/2/bb", '{"report": 2}', 1000.0)
        assert await a.read_members(since=999.0) == {
            "host/1/aa": '{"report": 1}',
            "host/2/bb": '{"report": 2}',
        }
        await a.publish_member("host/1/aa", '{"report": 3}', 1010.0)  # renewed, with a new record
        # Since 1005: b has not renewed, so it is no live member any more.
        assert await b.read_members(since=1005.0) == {"host/1/aa": '{"report": 3}'}
        await a.leave("host/1/aa")
        assert await b.read_members(since=0.0) == {"host/2/bb": '{"report": 2}'}

    run(pair, scenario)


def test_memory_lease_expires_after_its_ttl() -> None:
    clock = [0.0]
    store = MemoryStore(clock=lambda: clock[0])

    async def scenario() -> None:
        assert await store.try_lead("gw-a", 3.0)
        clock[0] = 2.9
        assert not await store.try_lead("gw-b", 3.0)
        clock[0] = 3.0
        assert await store.try_lead("gw-b", 3.0), "not renewed within the ttl: taken over"
        assert not await store.publish_health("gw-a", {}, 0.0), "the old holder is fenced off"

    asyncio.run(scenario())


def test_redis_lease_expires_when_the_holder_stops_renewing(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        a, b = RedisStore(redis_server.url), RedisStore(redis_server.url)
        try:
            # A lease long enough that B's first try (its first connection, the script loaded) falls
            # inside it even on a loaded machine: at 0.2 s a fresh-clone CI run once saw B lead at once.
            assert await a.try_lead("gw-a", 2.0)
            assert not await b.try_lead("gw-b", 10.0)
            async with asyncio.timeout(10):
                while not await b.try_lead("gw-b", 10.0):
                    await asyncio.sleep(0.02)
            assert not await a.publish_health("gw-a", {}, 0.0), "the old holder is fenced off"
            assert not await a.try_lead("gw-a", 0.2)
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


_HOLD_LEASE = """
import asyncio, sys, time
from aifabric.state import LocalStore
store = LocalStore(sys.argv[1])
assert asyncio.run(store.try_lead("child", 3.0))
print("leading", flush=True)
time.sleep(600)
"""


def test_local_lease_is_freed_when_the_holding_process_dies(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LEASE, str(tmp_path / "state")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "leading"
        store = LocalStore(tmp_path / "state")
        assert not asyncio.run(store.try_lead("parent", 3.0))
        assert (tmp_path / "state" / "lease").read_text().strip() == "child"
        child.kill()  # no clean shutdown: the kernel drops its lock
        child.wait(10)
        assert asyncio.run(store.try_lead("parent", 3.0))
        asyncio.run(store.close())
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def test_redis_prefix_keeps_two_fabrics_apart(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        team_a = RedisStore(redis_server.url, prefix="team-a:")
        team_b = RedisStore(redis_server.url, prefix="team-b:")
        try:
            assert await team_a.try_lead("gw-a", 5.0)
            assert await team_b.try_lead("gw-b", 5.0), "another fabric has a lease of its own"
            await team_a.publish_ejection("r/b/m", time.time() + 60, 1)
            assert await team_b.read_ejections(time.time()) == {}
        finally:
            await team_a.close()
            await team_b.close()
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in redis_server.client().keys("*"))
        assert keys == ["team-a:ejections", "team-a:lease", "team-b:lease"]

    asyncio.run(scenario())


def test_redis_unreachable_is_a_state_store_error_without_the_password(redis_server: RedisServer) -> None:
    redis_server.stop()

    async def scenario() -> None:
        store = RedisStore(f"unix://:hunter2@{redis_server.socket}")
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: store.try_lead("gw", 3.0),
                lambda: store.publish_health("gw", {}, 0.0),
                store.read_health,
                lambda: store.read_ejections(0.0),
                lambda: store.publish_ejection("t", time.time() + 5, 1),
            ]
            for call in calls:
                with pytest.raises(StateStoreError) as info:
                    await call()
                assert "hunter2" not in str(info.value)
        finally:
            await store.close()

    asyncio.run(scenario())
    store = RedisStore("redis://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in store.describe() and "***" in store.describe()
    asyncio.run(store.close())


def test_local_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to hand a directory to another user")
    other = tmp_path / "theirs"
    other.mkdir()
    os.chown(other, 65534, 65534)
    with pytest.raises(StateStoreError, match="belongs to another user"):
        LocalStore(other)


def test_local_every_publish_is_read_whole_as_a_new_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer, reader = LocalStore(tmp_path / "s"), LocalStore(tmp_path / "s")
        assert await writer.try_lead("w", 3.0)
        versions = set()
        for i in range(200):
            assert await writer.publish_health("w", {"b": {"n": i, "pad": "x" * 4000}}, float(i))
            snap = await reader.read_health()
            assert snap is not None and snap.backends["b"]["n"] == i
            versions.add(snap.version)
        assert len(versions) == 200
        await writer.close()
        await reader.close()

    asyncio.run(scenario())
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["health.json", "lease"], "no temporary file"
