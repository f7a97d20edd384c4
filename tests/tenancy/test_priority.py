"""The concurrency cap and its priority queue: the pure order, the async gate, and on a real gateway
the order in which a busy backend receives waiting requests."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import openai
import pytest
from tenancy_support import MASTER, fabric_text

from aifabric.config.load import load_config
from aifabric.gateway.admit import request_priority
from aifabric.tenancy.principal import Principal, Priority
from aifabric.tenancy.priority import BackendGate, PriorityQueue, QueueFull
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import eventually, wait_until

INTER, BATCH = Priority.INTERACTIVE, Priority.BATCH


def test_a_request_has_its_keys_priority_and_a_header_may_only_lower_it() -> None:
    batch_key, default_key = Principal("nightly", priority=BATCH), Principal("app")
    assert request_priority(batch_key, {}) is BATCH
    assert request_priority(default_key, {}) is INTER
    assert request_priority(default_key, {"x-aifabric-priority": "batch"}) is BATCH
    assert request_priority(batch_key, {"x-aifabric-priority": "interactive"}) is BATCH
    assert request_priority(default_key, {"x-aifabric-priority": " Interactive "}) is INTER


def test_interactive_before_batch_fifo_within_each_and_bounded() -> None:
    queue: PriorityQueue[str] = PriorityQueue(4)
    assert (
        queue.push("b1", BATCH)
        and queue.push("i1", INTER)
        and queue.push("b2", BATCH)
        and queue.push("i2", INTER)
    )
    assert not queue.push("late", INTER), "full: refused, not queued"
    assert queue.counts() == {"interactive": 2, "batch": 2}
    assert queue.remove("b1") and not queue.remove("b1")
    assert [queue.pop() for _ in range(4)] == ["i1", "i2", "b2", None]


def test_the_gate_hands_places_over_interactive_first() -> None:
    asyncio.run(_hands_places_over_interactive_first())


async def _hands_places_over_interactive_first() -> None:
    gate = BackendGate(1, queue=3)
    await gate.acquire(INTER, 1)
    served: list[str] = []

    async def wait(name: str, priority: Priority) -> None:
        await gate.acquire(priority, 5)
        served.append(name)

    tasks = [asyncio.create_task(wait("batch-1", BATCH))]
    await eventually(lambda: len(gate.waiting) == 1, "batch-1 waits")
    tasks.append(asyncio.create_task(wait("batch-2", BATCH)))
    await eventually(lambda: len(gate.waiting) == 2, "batch-2 waits")
    tasks.append(asyncio.create_task(wait("interactive", INTER)))
    await eventually(lambda: len(gate.waiting) == 3, "interactive waits")
    with pytest.raises(QueueFull):
        await gate.acquire(INTER, 5)
    for expected in (1, 2, 3):
        gate.release()
        await eventually(lambda n=expected: len(served) == n, "the next one is served")  # type: ignore[misc]
    assert served == ["interactive", "batch-1", "batch-2"]
    assert gate.in_use == 1
    gate.release()
    assert gate.in_use == 0
    await asyncio.gather(*tasks)


def test_a_waiter_that_gives_up_loses_nothing() -> None:
    asyncio.run(_a_waiter_that_gives_up_loses_nothing())


async def _a_waiter_that_gives_up_loses_nothing() -> None:
    gate = BackendGate(1, queue=5)
    await gate.acquire(INTER, 1)
    with pytest.raises(TimeoutError):
        await gate.acquire(INTER, 0.01)
    assert len(gate.waiting) == 0, "a timed-out waiter leaves the queue"
    cancelled = asyncio.create_task(gate.acquire(BATCH, 5))
    await eventually(lambda: len(gate.waiting) == 1, "it waits")
    gate.release()  # the place is handed to it...
    cancelled.cancel()  # ...as its client goes away: the place is passed on, not lost
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert gate.in_use == 0
    await gate.acquire(INTER, 1)
    assert gate.in_use == 1


def capped_gateway(tmp_path: Path, fb: FakeBackend) -> RunningGateway:
    """A started gateway (keys in tmp_path) in front of `fb` with one place: max_concurrency 1."""
    fabric_file = tmp_path / "fabric.yaml"
    text = fabric_text(fb.url, f"sqlite://{tmp_path}/keys.db")
    fabric_file.write_text(
        text.replace("health: {interval: 1h}", "max_concurrency: 1, health: {interval: 1h}")
    )
    return RunningGateway(load_config(fabric_file, environ={})).start()


def test_a_busy_backend_serves_waiting_interactive_requests_before_batch_ones(
    tmp_path: Path, fb: FakeBackend
) -> None:
    gw = capped_gateway(tmp_path, fb)
    try:
        fb.set(latency_ms=400)  # the first request holds the only place for a while
        order: list[str] = []
        lock = threading.Lock()

        def send(name: str, priority: str | None) -> None:
            headers = {"authorization": f"Bearer {MASTER}"}
            if priority:
                headers["x-aifabric-priority"] = priority
            body = {"model": "chat-fast", "messages": [{"role": "user", "content": name}]}
            response = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            with lock:
                order.append(name)

        def queued() -> dict[str, int]:
            gates = gw.call(gw.gateway.forwarder.gates)  # type: ignore[union-attr]
            return gates["b"].waiting.counts() if "b" in gates else {}  # type: ignore[index]

        threads = [threading.Thread(target=send, args=("first", None))]
        threads[0].start()
        wait_until(lambda: fb.count("/v1/chat/completions") == 1, "the first request holds the place")
        for i, (name, priority) in enumerate(
            [("batch-1", "batch"), ("batch-2", "batch"), ("interactive-1", None)], start=1
        ):
            thread = threading.Thread(target=send, args=(name, priority))
            thread.start()
            threads.append(thread)
            wait_until(lambda n=i: sum(queued().values()) == n, f"{name} waits in the queue")  # type: ignore[misc]
        for thread in threads:
            thread.join(30)
        received = [r.json["messages"][0]["content"] for r in fb.requests if r.path == "/v1/chat/completions"]
        assert received == ["first", "interactive-1", "batch-1", "batch-2"]

        with pytest.raises(openai.BadRequestError, match="interactive' or 'batch"):
            gw.openai(MASTER).chat.completions.create(
                model="chat-fast",
                messages=[{"role": "user", "content": "x"}],
                extra_headers={"x-aifabric-priority": "urgent"},
            )
    finally:
        gw.stop()


def test_a_capped_backend_gets_its_place_back_after_streams_and_failures(
    tmp_path: Path, fb: FakeBackend
) -> None:
    gw = capped_gateway(tmp_path, fb)
    try:
        client = gw.openai(MASTER)
        hi = [{"role": "user", "content": "hi"}]
        for _ in range(3):  # each would wait forever behind the previous one's place if it leaked
            with client.chat.completions.create(model="chat-fast", messages=hi, stream=True) as stream:  # type: ignore[arg-type]
                assert list(stream)
        fb.set(fail_first_n=1, fail_status=400)  # the client's own error: answered, place given back
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="chat-fast", messages=hi)  # type: ignore[arg-type]
        fb.set(token_delay_ms=100, tokens=50)
        with client.chat.completions.create(model="chat-fast", messages=hi, stream=True) as cut:  # type: ignore[arg-type]
            next(iter(cut))  # the client hangs up mid-stream
        gates = gw.call(gw.gateway.forwarder.gates)  # type: ignore[union-attr]
        wait_until(lambda: gates["b"].in_use == 0, "the hung-up stream's place is given back")  # type: ignore[index]
        fb.set(token_delay_ms=0)
        assert client.chat.completions.create(model="chat-fast", messages=hi)  # type: ignore[arg-type]
    finally:
        gw.stop()
