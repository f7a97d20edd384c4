"""The embeddings batcher: coalescing, bounds, order, isolation of a bad request, a full queue.

The model is replaced by a recording function (vectors that encode their input), so each test can
see exactly which inputs went into which run; the batcher itself, its thread and its event-loop
hand-off are the real ones. A run is held on a gate where a test needs requests to pile up behind it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from aifabric.local.batcher import BatchPolicy, EmbedBatcher, QueueFull
from aifabric.testing.wait import eventually


class FakeModel:
    """Vector of "t<n>" is [n, 0]; tokens used = len(text). Raises on an input containing "BAD"."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        self.runs.append(list(texts))
        self.started.set()
        assert self.gate.wait(30), "test never opened the gate"
        if any("BAD" in t for t in texts):
            raise ValueError("the model choked on BAD")
        return answer(texts)


def answer(texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The fake model's output: [n, 0] for "t<n>", and len(text) tokens."""
    vectors = np.array([[float(t.lstrip("t") or 0), 0.0] for t in texts], dtype=np.float32)
    return vectors, np.array([len(t) for t in texts], dtype=np.int64)


def texts(*numbers: int) -> list[str]:
    return [f"t{n}" for n in numbers]


def ids(vectors: npt.NDArray[np.float32]) -> list[int]:
    return [int(v) for v in vectors[:, 0]]


async def start(model: FakeModel, **policy: float) -> EmbedBatcher:
    return EmbedBatcher(model, asyncio.get_running_loop(), BatchPolicy(**policy))  # type: ignore[arg-type]


async def hold_first_run(model: FakeModel, batcher: EmbedBatcher) -> asyncio.Future[object]:
    """Submit one request and keep its run busy on the gate, so what follows queues behind it."""
    model.gate.clear()
    first = batcher.submit(texts(0))
    await eventually(model.started.is_set, "the first run to start")
    return first  # type: ignore[return-value]


def test_requests_that_arrive_during_a_run_share_the_next_one() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=64, max_wait=0.0)
        try:
            first = await hold_first_run(model, batcher)
            waiting = [batcher.submit(texts(n)) for n in range(1, 11)]
            await eventually(lambda: batcher.queued == 10, "ten requests queued")
            model.gate.set()
            results = await asyncio.gather(first, *waiting)
            assert model.runs == [texts(0), texts(*range(1, 11))]  # 11 requests, 2 model runs
            assert [ids(v) for v, _ in results] == [[n] for n in range(11)]  # each gets its own vector
            assert [tokens for _, tokens in results] == [2] * 10 + [3]
            assert (batcher.runs, batcher.inputs) == (2, 11)  # the mean batch /health reports
        finally:
            batcher.close()

    asyncio.run(go())


def test_a_run_takes_at_most_max_batch_inputs_and_a_large_request_keeps_its_order() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=4, max_wait=0.0)
        try:
            first = await hold_first_run(model, batcher)
            big = batcher.submit(texts(*range(1, 11)))  # 10 inputs: over 3 runs
            small = batcher.submit(texts(99))
            model.gate.set()
            (big_vectors, big_tokens), (small_vectors, _) = await asyncio.gather(big, small)
            await first
            assert model.runs[1:] == [texts(1, 2, 3, 4), texts(5, 6, 7, 8), [*texts(9, 10), "t99"]]
            assert ids(big_vectors) == list(range(1, 11)) and big_tokens == 9 * 2 + 3
            assert ids(small_vectors) == [99]
        finally:
            batcher.close()

    asyncio.run(go())


def test_a_full_run_starts_at_once_whatever_max_wait_says() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=3, max_wait=3600.0)
        try:
            vectors, _ = await asyncio.wait_for(batcher.submit(texts(1, 2, 3)), 60)
            assert ids(vectors) == [1, 2, 3]
        finally:
            batcher.close()

    asyncio.run(go())


def test_a_bad_request_fails_alone_and_its_batch_mates_are_answered() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=64, max_wait=0.0)
        try:
            first = await hold_first_run(model, batcher)
            good1 = batcher.submit(texts(1, 2))
            bad = batcher.submit(["t3", "BAD"])
            good2 = batcher.submit(texts(4))
            model.gate.set()
            await first
            assert ids((await good1)[0]) == [1, 2] and ids((await good2)[0]) == [4]
            with pytest.raises(ValueError, match="choked on BAD"):
                await bad
            # The shared run failed, then each request was run alone.
            assert model.runs[1:] == [[*texts(1, 2), "t3", "BAD", "t4"], texts(1, 2), ["t3", "BAD"], texts(4)]
            # The batcher goes on serving.
            assert ids((await batcher.submit(texts(5)))[0]) == [5]
        finally:
            batcher.close()

    asyncio.run(go())


def test_a_full_queue_refuses_new_requests_at_once_and_recovers() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=8, max_wait=0.0, max_queue=5)
        try:
            first = await hold_first_run(model, batcher)
            queued = [batcher.submit(texts(1, 2, 3)), batcher.submit(texts(4, 5))]
            with pytest.raises(QueueFull, match="queue is full"):
                batcher.submit(texts(6))
            model.gate.set()
            await asyncio.gather(first, *queued)
            assert ids((await batcher.submit(texts(6)))[0]) == [6]
        finally:
            batcher.close()

    asyncio.run(go())


def test_a_request_larger_than_the_queue_is_taken_when_nothing_waits() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=8, max_wait=0.0, max_queue=2)
        try:
            vectors, _ = await batcher.submit(texts(*range(10)))
            assert ids(vectors) == list(range(10))
        finally:
            batcher.close()

    asyncio.run(go())


def test_a_request_whose_client_left_costs_no_run() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=64, max_wait=0.0)
        try:
            first = await hold_first_run(model, batcher)
            gone = batcher.submit(texts(1))
            kept = batcher.submit(texts(2))
            gone.cancel()
            model.gate.set()
            await first
            assert ids((await kept)[0]) == [2]
            assert model.runs == [texts(0), texts(2)]
            assert batcher.queued == 0
        finally:
            batcher.close()

    asyncio.run(go())


def test_a_lone_request_on_an_idle_batcher_does_not_wait_for_company() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=64, max_wait=3600.0)
        try:
            for n in range(3):  # one after another: never in company
                vectors, _ = await asyncio.wait_for(batcher.submit(texts(n)), 60)
                assert ids(vectors) == [n]
        finally:
            batcher.close()

    asyncio.run(go())


def test_once_requests_arrive_together_a_run_waits_for_company_until_full() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=4, max_wait=3600.0)
        try:
            first = await hold_first_run(model, batcher)
            pair = [batcher.submit(texts(1)), batcher.submit(texts(2))]  # arrived together
            model.gate.set()
            await asyncio.gather(first, *pair)
            assert model.runs == [texts(0), texts(1, 2)]
            # From now on a run waits (up to max_wait, here an hour) until it is full.
            later = [batcher.submit(texts(3))]
            await eventually(lambda: batcher.queued == 1, "t3 queued")
            for n in (4, 5, 6):
                assert len(model.runs) == 2 and not later[0].done()  # t3 still waits for company
                later.append(batcher.submit(texts(n)))
            results = await asyncio.wait_for(asyncio.gather(*later), 60)
            assert [ids(v) for v, _ in results] == [[3], [4], [5], [6]]
            assert model.runs[2:] == [texts(3, 4, 5, 6)]
        finally:
            batcher.close()

    asyncio.run(go())


class HeldModel(FakeModel):
    """A FakeModel whose runs holding input `held` wait on the gate; the others go at once."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def __call__(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.held in texts:
                return super().__call__(texts)
            with self.lock:
                self.runs.append(list(texts))
            return answer(texts)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_with_two_runners_runs_overlap_and_a_request_split_over_them_keeps_its_order() -> None:
    async def go() -> None:
        model = HeldModel(held="t1")
        model.gate.clear()
        batcher = await start(model, max_batch=2, max_wait=0.0, runners=2)
        try:
            big = batcher.submit(texts(*range(1, 7)))  # 6 inputs: runs of [1, 2], [3, 4], [5, 6]
            await eventually(model.started.is_set, "the run of t1, t2 to start (held)")
            # The other runner goes on while the first is held: the request's later slices are done
            # before its first one.
            await eventually(lambda: len(model.runs) == 3, "the other runner to run t3..t6")
            assert not big.done()
            assert model.most_in_flight == 2
            model.gate.set()
            vectors, tokens = await asyncio.wait_for(big, 60)
            assert ids(vectors) == [1, 2, 3, 4, 5, 6] and tokens == 12
            assert sorted(model.runs) == [texts(1, 2), texts(3, 4), texts(5, 6)]
            assert (batcher.runs, batcher.inputs) == (3, 6)
        finally:
            model.gate.set()
            batcher.close()

    asyncio.run(go())


def test_with_two_runners_a_bad_request_still_fails_alone() -> None:
    async def go() -> None:
        model = FakeModel()
        batcher = await start(model, max_batch=2, max_wait=0.0, runners=2)
        try:
            futures = [batcher.submit(texts(n)) for n in range(1, 5)] + [batcher.submit(["BAD"])]
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert [ids(r[0]) for r in results[:4] if isinstance(r, tuple)] == [[1], [2], [3], [4]]
            assert isinstance(results[4], ValueError)
        finally:
            batcher.close()

    asyncio.run(go())
