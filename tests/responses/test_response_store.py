"""The store behind `previous_response_id`: bounded in memory (entries, bytes, TTL), shared in Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from responses_support import Estate

from aifabric.config.load import load_config_text
from aifabric.errors import StateStoreError
from aifabric.state import open_response_store
from aifabric.state.responses import FileResponseStore, MemoryResponseStore, RedisResponseStore
from aifabric.testing.gateway import RunningGateway
from redis_support import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_store_expires_after_its_ttl() -> None:
    clock = Clock()
    store = MemoryResponseStore(ttl=60, clock=clock)
    asyncio.run(store.save("a", b"record"))
    clock.now += 59
    assert asyncio.run(store.load("a")) == b"record"
    clock.now += 1
    assert asyncio.run(store.load("a")) is None
    assert len(store) == 0 and store.bytes == 0


def test_memory_store_evicts_the_least_recently_used_past_its_count() -> None:
    store = MemoryResponseStore(max_entries=2, clock=Clock())
    asyncio.run(store.save("a", b"1"))
    asyncio.run(store.save("b", b"2"))
    assert asyncio.run(store.load("a")) == b"1"  # a is now the more recent
    asyncio.run(store.save("c", b"3"))
    assert asyncio.run(store.load("b")) is None
    assert asyncio.run(store.load("a")) == b"1"
    assert asyncio.run(store.load("c")) == b"3"


def test_memory_store_is_bounded_in_bytes() -> None:
    store = MemoryResponseStore(max_bytes=10, clock=Clock())
    for name in "abcd":
        asyncio.run(store.save(name, b"xxxx"))
    assert store.bytes <= 10
    assert [asyncio.run(store.load(n)) is not None for n in "abcd"] == [False, False, True, True]
    asyncio.run(store.save("huge", b"y" * 11))  # larger than the whole store: not kept, nothing evicted
    assert asyncio.run(store.load("huge")) is None
    assert asyncio.run(store.load("d")) == b"xxxx"


def test_an_expired_response_is_a_400_not_an_empty_history(estate: Estate, gateway: RunningGateway) -> None:
    clock = Clock()
    store = MemoryResponseStore(ttl=60, clock=clock)

    def use_store() -> None:
        assert gateway.gateway is not None
        gateway.gateway.responses.store = store

    gateway.call(use_store)
    client = gateway.openai()
    first = client.responses.create(model="translated", input="remember me")
    assert client.responses.create(model="translated", input="ok", previous_response_id=first.id)
    clock.now += 61
    sent = len(estate.tr.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="translated", input="and now?", previous_response_id=first.id)
    assert caught.value.param == "previous_response_id"
    assert "expired" in caught.value.message
    assert len(estate.tr.requests) == sent


def test_replicas_share_conversations_through_redis(estate: Estate, redis_server: RedisServer) -> None:
    one = estate.start(state=redis_server.url).openai()
    two = estate.start(state=redis_server.url).openai()
    first = one.responses.create(model="translated", input="my name is Ann")
    second = two.responses.create(model="translated", input="who am I?", previous_response_id=first.id)
    assert second.output_text == "[m] who am I?"
    assert [m["role"] for m in estate.tr.requests[-1].json["messages"]] == ["user", "assistant", "user"]
    assert two.responses.retrieve(first.id).output_text == "[m] my name is Ann"
    key = f"aifabric:response:{first.id}"
    ttl_ms = redis_server.client().pttl(key)
    assert 0 < ttl_ms <= 3600 * 1000  # kept with a TTL, never forever
    with pytest.raises(openai.BadRequestError) as caught:
        two.responses.create(model="translated", input="x", previous_response_id="resp_unknown")
    assert caught.value.param == "previous_response_id"


def test_redis_down_is_a_503_that_says_so(estate: Estate, redis_server: RedisServer) -> None:
    client = estate.start(state=redis_server.url).openai()
    first = client.responses.create(model="translated", input="hi")
    redis_server.stop()
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model="translated", input="x", previous_response_id=first.id)
    assert caught.value.status_code == 503
    assert caught.value.code == "response_store_unavailable"
    # Without previous_response_id, requests are served; the answer just cannot be continued later.
    assert client.responses.create(model="translated", input="still?").output_text == "[m] still?"


def test_redis_store_round_trip(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = RedisResponseStore(redis_server.url, prefix="t:", ttl=30)
        await store.save("r1", b"data")
        assert await store.load("r1") == b"data"
        assert await store.load("r2") is None
        await store.close()
        broken = RedisResponseStore("redis://127.0.0.1:1/0", timeout=0.2)
        with pytest.raises(StateStoreError):
            await broken.load("r1")
        await broken.close()

    asyncio.run(main())


def test_the_store_follows_the_fabric_file(tmp_path: Path) -> None:
    estate = (
        'backends: {b: {kind: vllm, url: "http://127.0.0.1:9/v1"}}\n'
        "roles: {r: {kind: chat, targets: [{backend: b, model: m}]}}\n"
    )
    text = "gateway: {responses_ttl: 2m, responses_max_bytes: 1MiB}\n" + estate
    store = open_response_store(load_config_text(text, "fabric.yaml", environ={}))
    assert isinstance(store, MemoryResponseStore)
    assert (store.ttl, store.max_bytes) == (120.0, 1024 * 1024)
    workers = "gateway: {workers: 2, responses_ttl: 5m}\n" + estate
    config = load_config_text(workers, "fabric.yaml", environ={})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        files = open_response_store(config, port=4321)
    assert isinstance(files, FileResponseStore) and files.ttl == 300.0
    assert files.directory == tmp_path / "aifabric" / "4321" / "responses"
