"""Coalescing concurrent embedding requests into one model run (dynamic batching, as TEI and infinity do).

One ONNX run of 64 short sentences costs a fraction of 64 runs of one: the encoder's matrix products
get wide enough to use the CPU's vector units and the per-run overhead is paid once. So requests are
not run one by one: each is queued, and a worker thread takes what is queued, across requests, up to
`max_batch` inputs, into one run.

    event loop                          worker thread
    submit(texts) -> future   ──queue──>  wait for a job; if requests have been coming together and
                                          fewer than max_batch inputs are queued, wait up to
                                          max_wait more (bounded: latency is never traded for more
                                          than that; a lone request on an idle server never waits)
                                          take up to max_batch inputs, oldest first (a large request
                                          is split over several runs; its slices stay in order)
                                          run them; on failure, run each request's slice alone, so
                                          one bad request fails only itself
    future <- vectors of the request ───  when a request's last slice is done

With `runners` > 1, that many worker threads each take and run a batch, so runs overlap: one's
Python part (tokenizing, padding, pooling) beside another's model run, and with one onnxruntime thread
per run no thread waits for the others between the operators of a run. Slices of one large request
may finish out of order; its vectors are put back in order by where each slice starts.

The queue is bounded (`max_queue` inputs waiting): past it, `submit` raises QueueFull at once, which
the server answers 503 with Retry-After, so a client or the gateway backs off or fails over instead
of piling up work nobody will wait for. A request whose client went away (its future cancelled) is
dropped from the queue before it costs a run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from aifabric.errors import FabricError

__all__ = ["BatchPolicy", "EmbedBatcher", "QueueFull", "RunFn"]

# One model run: texts in, (vectors (n, dim), tokens per text (n,)) out.
RunFn = Callable[[Sequence[str]], tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]


class QueueFull(FabricError):
    """The batcher's queue holds `max_queue` inputs already: answer 503 + Retry-After."""


@dataclass(frozen=True)
class BatchPolicy:
    # Inputs per model run. Measured on 2 cores (2 runners, short sentences): runs of 32 did 584/s, of
    # 64 565/s; one runner with runs of 128 520/s. A run of 32 is already wide enough for the CPU's
    # vector units, and a smaller run keeps the other runner fed.
    max_batch: int = 32
    max_wait: float = 0.002  # seconds a run waits for more inputs when it is not full
    max_queue: int = 4096  # inputs waiting (not yet running) before new requests are refused
    runners: int = 1  # model runs at once, each on its own worker thread


@dataclass(eq=False)
class _Job:
    texts: Sequence[str]
    future: asyncio.Future[tuple[npt.NDArray[np.float32], int]]
    queued_at: float
    taken: int = 0  # inputs handed to a run so far
    done: int = 0  # inputs whose vectors are back
    parts: list[tuple[int, npt.NDArray[np.float32]]] = field(default_factory=list)  # (start, vectors)
    tokens: int = 0


class EmbedBatcher:
    """Queue and worker threads; `submit` from the event loop, `close` to stop the workers."""

    def __init__(
        self,
        run: RunFn,
        loop: asyncio.AbstractEventLoop,
        policy: BatchPolicy = BatchPolicy(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._loop = loop
        self.policy = policy
        self._clock = clock
        self._jobs: deque[_Job] = deque()
        self._queued = 0  # inputs in _jobs not yet taken by a run
        self._cond = threading.Condition()
        self._closed = False
        self._company = False  # whether requests have been arriving together (see _take)
        # Model runs and the inputs they carried, so far: inputs / runs is the mean batch, the
        # evidence (for tests, /health and the bench) that requests coalesce, independent of timing.
        self.runs = 0
        self.inputs = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"embed-batcher-{n}", daemon=True)
            for n in range(max(1, policy.runners))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def submit(self, texts: Sequence[str]) -> asyncio.Future[tuple[npt.NDArray[np.float32], int]]:
        """Queue `texts`; the future gets their vectors, in order, and the tokens they used.

        Raises QueueFull when the queue is full. A request larger than the whole queue is still taken
        when nothing else waits, so no valid request is refused forever."""
        future: asyncio.Future[tuple[npt.NDArray[np.float32], int]] = self._loop.create_future()
        with self._cond:
            if self._closed:
                raise QueueFull("the embeddings server is shutting down")
            if self._queued and self._queued + len(texts) > self.policy.max_queue:
                raise QueueFull(
                    f"the embeddings queue is full ({self._queued} inputs waiting, at most "
                    f"{self.policy.max_queue}); retry shortly"
                )
            self._jobs.append(_Job(texts, future, self._clock()))
            self._queued += len(texts)
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    # -- worker thread ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._execute(batch)

    def _take(self) -> list[tuple[_Job, int, int]] | None:
        """The next run: (job, start, end) slices, oldest first, at most max_batch inputs in all."""
        policy = self.policy
        with self._cond:
            while True:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                # Bounded wait for company, only while requests come in company (the last run
                # carried several, or more were waiting): then a run starts when it is full or
                # max_wait after its oldest request arrived. A lone request on an idle server runs
                # at once: nothing suggests another is coming.
                deadline = self._jobs[0].queued_at + policy.max_wait
                while self._company and self._queued < policy.max_batch and not self._closed:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch: list[tuple[_Job, int, int]] = []
                room = policy.max_batch
                while self._jobs and room > 0:
                    job = self._jobs[0]
                    if job.future.cancelled():  # its client went away: no run for it
                        self._jobs.popleft()
                        self._queued -= len(job.texts) - job.taken
                        continue
                    start = job.taken
                    end = min(len(job.texts), start + room)
                    batch.append((job, start, end))
                    job.taken = end
                    room -= end - start
                    self._queued -= end - start
                    if end == len(job.texts):
                        self._jobs.popleft()
                if batch:
                    self._company = len(batch) > 1 or bool(self._jobs)
                    if self._jobs:  # what is left is another runner's (submit woke only one)
                        self._cond.notify()
                    return batch

    def _execute(self, batch: list[tuple[_Job, int, int]]) -> None:
        texts = [t for job, start, end in batch for t in job.texts[start:end]]
        try:
            vectors, counts = self._run(texts)
            self._counted(len(texts))
        except Exception:
            # Something in this run broke it: run each request's slice alone, so only the request
            # that carries the culprit fails.
            for one in batch:
                self._execute_alone(one)
            return
        offset = 0
        for job, start, end in batch:
            n = end - start
            self._deliver(job, start, vectors[offset : offset + n], int(counts[offset : offset + n].sum()))
            offset += n

    def _execute_alone(self, item: tuple[_Job, int, int]) -> None:
        job, start, end = item
        if job.future.done():
            return
        try:
            vectors, counts = self._run(job.texts[start:end])
            self._counted(end - start)
        except Exception as exc:
            self._fail(job, exc)
            return
        self._deliver(job, start, vectors, int(counts.sum()))

    def _counted(self, inputs: int) -> None:
        with self._cond:  # runners count at once
            self.runs += 1
            self.inputs += inputs

    def _deliver(self, job: _Job, start: int, vectors: npt.NDArray[np.float32], tokens: int) -> None:
        with self._cond:  # two runners may finish slices of one request at once
            job.parts.append((start, vectors))
            job.tokens += tokens
            job.done += len(vectors)
            if job.done != len(job.texts):
                return
            job.parts.sort(key=lambda part: part[0])  # slices finish in any order with runners > 1
        parts = [vectors for _, vectors in job.parts]
        result = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self._loop.call_soon_threadsafe(_resolve, job.future, (result, job.tokens))

    def _fail(self, job: _Job, exc: Exception) -> None:
        with self._cond:  # its remaining slices need no run
            if job in self._jobs:
                self._jobs.remove(job)
                self._queued -= len(job.texts) - job.taken
        self._loop.call_soon_threadsafe(_reject, job.future, exc)


def _resolve(
    future: asyncio.Future[tuple[npt.NDArray[np.float32], int]], value: tuple[npt.NDArray[np.float32], int]
) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[tuple[npt.NDArray[np.float32], int]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
