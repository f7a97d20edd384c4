"""Rate-limit counters shared by the gateway's processes, off the request path.

Every `interval` (250 ms, rounds aligned to the wall clock so that the processes exchange at about
the same instants) each process publishes what it counted in the current and the previous minute and
learns what the others counted; its sliding windows add the others' counts to their own
(tenancy.ratelimit). A request never waits for this. Between two rounds a process does not see what
the others admit, so after each round it may spend only 1/N of the headroom it saw (N the processes
the exchange saw; `SlidingWindow.resplit`): a burst spread over the processes stays within the limit.

    state: redis://...       replicas: RedisExchange
        <prefix>rl:<key|role>:<name>:<requests|tokens>:<minute>   INCRBYFLOAT, expires after 3 minutes
        <prefix>rl:members     sorted set: process -> its last round (who takes a share)
        <prefix>rl:scopes      sorted set: limit -> last counted (so a process knows the others' counts
                               for a key before its own first request with it)
    state: memory, --workers N    the workers of one port: FileExchange
        <state dir>/rl-<pid>.json   each worker's counts, replaced atomically every round; a round
                                    waits (a few ms, at most 80% of the interval) for the others'
                                    files of the same tick, so that every worker splits one view

Both exchanges wait for the others' counts of the round's tick. A round that still lacks some (a
process stalled, stopped or starting) splits nothing: the process goes on with its last part until a
round reads everyone's counts (a split from counts a round old would hand out what the late process
admitted since), or for LATE_ROUNDS rounds. Only a round in which all published on the same tick
hands out the turn.

When the exchange fails (Redis away), each process enforces its share of every limit (1/N, N the
processes seen in the last rounds), says so once in the log and in `/status`, and shares counts again
when the exchange works again. Nothing fails because of it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from aifabric.errors import StateStoreError
from aifabric.tenancy.admission import Admission, Scope
from aifabric.tenancy.ratelimit import WINDOW, SlidingWindow

__all__ = ["LATE_ROUNDS", "FileExchange", "LimitExchange", "LimitSync", "RedisExchange", "View", "turn_of"]

log = logging.getLogger("aifabric.tenancy")

SYNC_INTERVAL = 0.25
_MEMBER_TTL = 10.0  # seconds: a process not heard of for this long no longer takes a share
# How long a round waits for the others' counts of the same tick, as a fraction of the interval.
# Waiting is safe (until its next split a process spends only its part of the last one); a split
# made from counts a round old is not: it hands out headroom the late process may have spent since.
_WAIT = 0.8
# Rounds in a row without everyone's counts of the tick after which a process splits from what it has
# (and says so): a process stopped uncleanly is counted until _MEMBER_TTL, and replicas whose clocks
# differ by more than the wait never publish on the same tick; neither may freeze the limits.
LATE_ROUNDS = 4

Counts = dict[Scope, dict[int, float]]  # scope -> minute index -> count


class View(NamedTuple):
    """What one exchange learned."""

    processes: int  # the live processes, this one included
    rank: int  # this process's place among them (0..N-1), an order every process sees alike
    others: Counts  # what the others counted
    # Every other's counts are of this round or a later one (not: one of them did not publish this
    # round in time; its counts are a round old or more, and a split made from them would be too big).
    fresh: bool = True
    # Every other's counts are of this very round: the processes agree on whose turn it is.
    aligned: bool = True


class LimitExchange(abc.ABC):
    kind = "abstract"

    @abc.abstractmethod
    async def exchange(self, mine: Counts, now: float) -> View:
        """Publish this process's counts (`now`: the round's time, aligned to the interval) and read
        the others'. StateStoreError (or the store's own errors) when it cannot."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Withdraw this process (a clean shutdown) and release connections."""


class RedisExchange(LimitExchange):
    kind = "redis"

    def __init__(self, url: str, *, interval: float = SYNC_INTERVAL) -> None:
        from aifabric.state.redis import DEFAULT_PREFIX, require_redis, split_state_url

        redis = require_redis()
        clean, ours = split_state_url(url)
        self._prefix = ours.get("prefix", DEFAULT_PREFIX) + "rl:"
        try:
            self._redis: Any = redis.Redis.from_url(clean, socket_timeout=1.0, socket_connect_timeout=1.0)
        except ValueError as exc:
            raise StateStoreError(f"state: not a Redis URL: {exc}") from exc
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._member = f"{socket.gethostname()}/{os.getpid()}/{os.urandom(3).hex()}"
        self._pushed: dict[tuple[Scope, int], float] = {}
        self._interval = interval

    async def exchange(self, mine: Counts, now: float) -> View:
        # Round trip 1: this process's news (deltas since the last round), and every live scope.
        pipe = self._redis.pipeline(transaction=False)
        members, scopes = self._prefix + "members", self._prefix + "scopes"
        pipe.zadd(members, {self._member: now})
        pipe.zremrangebyscore(members, "-inf", now - _MEMBER_TTL)
        pipe.zrange(members, 0, -1, withscores=True)
        pushing: dict[tuple[Scope, int], float] = {}
        for scope, by_index in mine.items():
            base = self._prefix + ":".join(scope) + ":"
            for index, count in by_index.items():
                delta = count - self._pushed.get((scope, index), 0.0)
                if delta:
                    pipe.incrbyfloat(base + str(index), delta)
                    pipe.expire(base + str(index), int(3 * WINDOW))
                    pipe.zadd(scopes, {":".join(scope): now})
                    pushing[(scope, index)] = count
        pipe.zremrangebyscore(scopes, "-inf", now - 3 * WINDOW)
        pipe.zrange(scopes, 0, -1)
        results = await pipe.execute()
        # Only now: a round that failed pushes the same counts again (over-counting, never under).
        self._pushed.update(pushing)
        live = {_scope(raw.decode()) for raw in results[-1]} | set(mine)
        # As the file exchange does: wait a little for the replicas whose round of this tick has not
        # published yet (the score of each is its last round's time).
        tick = round(now / self._interval)
        rounds: list[tuple[bytes, float]] = results[2]
        deadline = time.monotonic() + _WAIT * self._interval
        while True:
            fresh, aligned = _timely([round(at / self._interval) for _, at in rounds], tick)
            if fresh or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
            rounds = await self._redis.zrangebyscore(members, now - _MEMBER_TTL, "+inf", withscores=True)
        index = int(now // WINDOW)
        # Round trip 2: the totals of every live scope's current and previous minute.
        ordered = list(live)
        pipe = self._redis.pipeline(transaction=False)
        for scope in ordered:
            base = self._prefix + ":".join(scope) + ":"
            pipe.get(base + str(index))
            pipe.get(base + str(index - 1))
        totals = await pipe.execute()
        others: Counts = {}
        for scope, cur, prev in zip(ordered, totals[0::2], totals[1::2], strict=True):
            own = mine.get(scope, {})
            others[scope] = {
                index: max(0.0, float(cur or 0) - own.get(index, 0.0)),
                index - 1: max(0.0, float(prev or 0) - own.get(index - 1, 0.0)),
            }
        current = {(s, i) for s in mine for i in (index, index - 1)}
        for stale in [k for k in self._pushed if k not in current]:
            del self._pushed[stale]
        live_members = sorted(m.decode() for m, _ in rounds)
        rank = live_members.index(self._member) if self._member in live_members else 0
        return View(max(1, len(live_members)), rank, others, fresh=fresh, aligned=aligned)

    async def close(self) -> None:
        with contextlib.suppress(*self.errors):
            await self._redis.zrem(self._prefix + "members", self._member)
        with contextlib.suppress(*self.errors):
            await self._redis.aclose()


class FileExchange(LimitExchange):
    """The workers of one `aifabric serve --workers N`: one small file each in their private state
    directory (a tmpfs), written atomically; a worker that died stops counting after _MEMBER_TTL."""

    kind = "local"
    errors: tuple[type[BaseException], ...] = (OSError, ValueError)

    def __init__(self, directory: Path, *, interval: float = SYNC_INTERVAL) -> None:
        self.directory = directory
        self._mine = directory / f"rl-{os.getpid()}.json"
        self._interval = interval

    async def exchange(self, mine: Counts, now: float) -> View:
        return await asyncio.to_thread(self._exchange, mine, now)

    def _exchange(self, mine: Counts, now: float) -> View:
        data = {":".join(s): {str(i): c for i, c in by.items()} for s, by in mine.items()}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".rl-")
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps({"at": now, "counts": data}))
        os.replace(tmp, self._mine)
        # The rounds fall on the same ticks: a worker busy with requests may publish this tick's
        # counts a few milliseconds after this one. Read its counts of this tick, not of the one
        # before (what it admitted in between would be missing from the headroom split now), waiting
        # for them; a worker that does not come (stopped, stuck) is read as it is, and the view says
        # so (LimitSync then keeps the last split, for up to LATE_ROUNDS rounds).
        tick = round(now / self._interval)
        deadline = time.monotonic() + _WAIT * self._interval
        while True:
            # Read after the clock: a file that came before the deadline is in the last read.
            past = time.monotonic() >= deadline
            view = self._read(now, tick)
            if view.fresh or past:
                return view
            time.sleep(0.005)

    def _read(self, now: float, tick: int) -> View:
        processes = 1
        rank = 0  # by file name: the workers with a name before this one's
        ticks: list[int] = []
        others: Counts = {}
        for path in self.directory.glob("rl-*.json"):
            if path == self._mine:
                continue
            try:
                other = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # gone meanwhile, or another worker's file from an older version
            if not isinstance(other, dict) or now - float(other.get("at", 0)) > _MEMBER_TTL:
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > 6 * _MEMBER_TTL:
                        path.unlink()  # a worker that died long ago
                continue
            processes += 1
            rank += path.name < self._mine.name
            ticks.append(round(float(other["at"]) / self._interval))
            for raw, by_index in other.get("counts", {}).items():
                counts = others.setdefault(_scope(raw), {})
                for index, count in by_index.items():
                    counts[int(index)] = counts.get(int(index), 0.0) + float(count)
        fresh, aligned = _timely(ticks, tick)
        return View(processes, rank, others, fresh=fresh, aligned=aligned)

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self._mine.unlink()


class LimitSync:
    def __init__(
        self,
        admission: Admission,
        exchange: LimitExchange,
        *,
        interval: float = SYNC_INTERVAL,
        wall: Callable[[], float] = time.time,
        processes: int = 1,
    ) -> None:
        self._admission = admission
        self._exchange = exchange
        self._interval = interval
        self._wall = wall
        self._failures = (StateStoreError, TimeoutError, *getattr(exchange, "errors", (OSError,)))
        self.processes = processes  # how many share the limits, as last seen (the share when alone)
        self.synced_at = 0.0
        self.reachable = True
        self._publish_share()
        self.error = ""
        self.late_rounds = 0  # rounds in a row whose exchange lacked someone's counts of the tick

    def share(self) -> float:
        """1 while the shared counts are fresh; this process's share of each limit otherwise."""
        return self._admission.share_at(self._wall())

    def _publish_share(self) -> None:
        """Tell the admission until when the shared counts are fresh (the whole limit then, a share of
        it after): data it reads per request, where calling back here would cost a Python call."""
        fresh_for = max(2.0, 4 * self._interval)
        self._admission.fresh_until = self.synced_at + fresh_for if self.reachable else -math.inf
        self._admission.stale_share = 1.0 / max(1, self.processes)

    def status(self) -> dict[str, object]:
        return {
            "shared": self._exchange.kind,
            "reachable": self.reachable,
            "processes": self.processes,
            "share": round(self.share(), 3),
            "error": self.error,
            "late_rounds": self.late_rounds,
        }

    async def round(self) -> None:
        """Publish this process's counts, apply the others'. Never raises for the exchange."""
        now = self._wall()
        windows = self._admission.windows
        mine: Counts = {}
        spent: dict[Scope, float] = {}  # each window's count since the last split, as published
        for scope, window in windows.items():
            window.used(now)  # roll to the current minute first
            spent[scope] = window.since
            window.end_turn()  # what it publishes now is what the next turn's holder reads
            if window.limit or window.mine_cur or window.mine_prev:  # not a placeholder of others' counts
                mine[scope] = {window.index: window.mine_cur, window.index - 1: window.mine_prev}
        try:
            async with asyncio.timeout(2.0):
                view = await self._exchange.exchange(mine, now)
        except self._failures as exc:
            if self.reachable:
                log.warning(
                    "rate-limit counters are not shared (%s unreachable: %s): each gateway process now "
                    "enforces 1/%d of every limit",
                    self._exchange.kind,
                    exc,
                    max(1, self.processes),
                )
            self.reachable = False
            self.error = str(exc) or type(exc).__name__
            self._admission.processes = 1
            self._publish_share()
            for window in windows.values():
                window.unsplit()  # the admission's share (1/N of each limit) bounds this process now
            return
        if not self.reachable:
            log.warning("rate-limit counters are shared again (%s reachable)", self._exchange.kind)
        self.reachable = True
        self.error = ""
        self.synced_at = now
        self.processes = view.processes
        self._publish_share()
        for scope in view.others:
            if scope not in windows:
                # Its limit is set by the first request that uses it; until then it only counts.
                windows[scope] = SlidingWindow(0)
        if view.fresh:
            if self.late_rounds >= LATE_ROUNDS:
                log.info("rate-limit counts: every process publishes on the same ticks again")
            self.late_rounds = 0
        else:
            self.late_rounds += 1
            if self.late_rounds == LATE_ROUNDS:
                log.warning(
                    "rate-limit counts: another gateway process has not published on this one's "
                    "ticks for %d rounds (stalled, stopped, or its clock is %s ms or more apart): "
                    "splitting from its last counts, which may let a request or two past a limit",
                    LATE_ROUNDS,
                    round(_WAIT * self._interval * 1000),
                )
        degraded = self.late_rounds >= LATE_ROUNDS
        # Not fresh: another process's counts are older than this round. A split now would count
        # without what it admitted since, so this process goes on with its last part (`since` still
        # counts from that split) until a round reads everyone's counts, or for LATE_ROUNDS rounds.
        split = view.fresh or degraded
        # One process a round, in turn, may admit a first request beyond its part (ratelimit), when
        # all published in this very round: processes whose rounds fell on different ticks could
        # each hold a turn at once (seen in a 2-worker burst: 6 admitted of 5). Degraded, by this
        # process's tick alone: else a small limit could never be reached.
        tick = round(now / self._interval)
        turn = (view.aligned or degraded) and view.rank == turn_of(tick, view.processes)
        self._admission.processes = view.processes
        for scope, window in windows.items():
            window.used(now)
            counts = view.others.get(scope, {})
            window.shared_cur = counts.get(window.index, 0.0)
            window.shared_prev = counts.get(window.index - 1, 0.0)
            if window.limit and split:
                # What it admitted while the exchange ran is not in the others' counts: it is spent
                # from the new part.
                window.resplit(now, view.processes, window.since - spent.get(scope, 0.0), turn=turn)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.round()
            # To the next multiple of the interval: every process's rounds fall at the same instants,
            # so what one admits after a round is in the others' next one.
            delay = self._interval - self._wall() % self._interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def close(self) -> None:
        await self._exchange.close()


def _timely(ticks: list[int], tick: int) -> tuple[bool, bool]:
    """(fresh, aligned) of a round on `tick` that read counts the others published on `ticks`. One
    silent for more than LATE_ROUNDS rounds has stopped (uncleanly: it is counted until _MEMBER_TTL)
    or hangs; its counts are read as they are, and nobody waits for it."""
    recent = [t for t in ticks if tick - t <= LATE_ROUNDS]
    return all(t >= tick for t in recent), all(t == tick for t in recent)


_M64 = (1 << 64) - 1


def turn_of(tick: int, processes: int) -> int:
    """Which rank has the turn in round `tick`: the tick mixed (splitmix64's finalizer), so that a
    client asking at a steady rhythm (every 4th round, say) does not always meet the same one."""
    z = (tick + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return (z ^ (z >> 31)) % max(1, processes)


def _scope(raw: str) -> Scope:
    kind, _, rest = raw.partition(":")
    name, _, what = rest.rpartition(":")
    return (kind, name, what)
