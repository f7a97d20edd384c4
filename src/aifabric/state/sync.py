"""The control-plane task that shares health and ejections between gateways through a `StateStore`.

Once a round (`interval`, 1 s by default) every gateway:

1. tries to take or renew the probe lease (ttl: 3 rounds);
2. as the lease holder, runs the health checker (the checker is started when the lease is won and
   stopped when it is lost, so exactly one gateway probes) and publishes every backend's health;
   otherwise it applies the holder's latest health to its own `BackendHealth` objects, which its
   routing table reads as if it had probed itself;
3. publishes the ejections its own requests caused, and takes on the ones other gateways published;
4. renews the stops of backends an operator stopped through it (drill, /admin/backends/NAME/stop), and
   holds every stopped backend down, whoever stopped it, until it is started again;
5. looks for a config reload another gateway announced (`aifabric config reload` reaches one worker
   of one replica): a new announcement makes this gateway reload its own fabric file
   (`on_config_announced`). The announcement current at the first round is old news: it is noted, not
   acted on (this gateway has just loaded its file);
6. says it is alive, with what it did about the latest announcement (`config_report`, set by the
   gateway: applied or refused, its files' version): `aifabric config reload` waits until every live
   gateway has answered (`members`).

The data plane is untouched: it keeps reading the same objects, and nothing on the request path waits
for the store. When the store cannot be reached, the gateway probes for itself (logged once) and goes
back to sharing when the store answers again, so a Redis outage costs duplicate probes, not requests.

Ejections are noticed by looking at each target's detector once a round rather than by a hook in the
forwarder: at most one round late, and the request path stays free of any call into this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from aifabric.core import Transition
from aifabric.errors import StateStoreError
from aifabric.state.base import StateStore
from aifabric.state.snapshot import apply_health_record, health_record, to_epoch, to_local

if TYPE_CHECKING:
    from aifabric.health.checker import HealthChecker
    from aifabric.routing.table import RoutingTable
    from aifabric.routing.target import TargetState

__all__ = ["DEFAULT_INTERVAL", "StateSync", "new_holder_id"]

log = logging.getLogger("aifabric.state")

DEFAULT_INTERVAL = 1.0


def new_holder_id() -> str:
    """Who this gateway is in the lease: host, pid, and a random part (a pid can be reused)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


class StateSync:
    """Shares one gateway's control-plane state; see the module docstring for a round."""

    def __init__(
        self,
        store: StateStore,
        checker: HealthChecker,
        table: Callable[[], RoutingTable],
        *,
        interval: float = DEFAULT_INTERVAL,
        ttl: float | None = None,
        stale_after: float | None = None,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.store = store
        self.checker = checker
        self._table = table
        self.interval = interval
        self.ttl = ttl if ttl is not None else 3 * interval
        # Health no leader has stood behind for this long (a previous run's file) is not applied.
        self.stale_after = stale_after if stale_after is not None else max(30.0, 10 * self.ttl)
        self.holder = holder or new_holder_id()
        self._clock = clock
        self._wall = wall
        self._on_transition = on_transition
        self.leader = False
        # Backends stopped on purpose through this gateway (its local supervisor): renewed every round,
        # so the stop lapses by itself if this gateway dies; and the ones started again since the last
        # round, whose stop is lifted in the store.
        self._own_stops: dict[str, str] = {}
        self._lifted: set[str] = set()
        # The stops this gateway took on from the store (backend -> reason): only these end when the
        # store no longer holds them. A backend stopped here for another cause (a model on demand
        # idled, `mark_idle`) is not the store's to start again.
        self._from_store: dict[str, str] = {}
        self.store_reachable = True
        self.applied_version: str | None = None
        self.applied_from: str | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._probe_stop = asyncio.Event()
        self._published: dict[str, float] = {}  # target -> local `until` already shared or taken on
        self._seen_remote: dict[str, float] = {}  # target -> epoch `until` already taken on
        # Config reloads announced through the store: the last one seen (or made), and whom to tell.
        self.on_config_announced: Callable[[str], None] | None = None
        self._seen_config: str | None = None
        self._config_primed = False
        # What this gateway did about its configuration last (JSON-ready; the gateway sets it at start
        # and after every reload), shared with the announcement it answers in every round.
        self.config_report: dict[str, Any] | None = None

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every `interval` until `stop` is set; then stop probing and give the lease back."""
        log.info("sharing health and ejections through %s", self.store.describe())
        round_: asyncio.Future[None] | None = None
        try:
            while not stop.is_set():
                # Shielded: a cancel (the gateway closing) lets the round finish rather than cut a
                # store call in half, which would leave its connection in an unknown state.
                round_ = asyncio.ensure_future(self.tick())
                try:
                    await asyncio.shield(round_)
                except Exception:  # a bug here must not leave the gateway without health checks
                    log.exception("state sync round failed; probing locally")
                    self._start_probing()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval)
        finally:
            await _uncancelled(self._finish(round_))

    async def _finish(self, round_: asyncio.Future[None] | None) -> None:
        if round_ is not None and not round_.done():
            await asyncio.wait([round_])  # bounded: every store call has a short timeout
        await self.shutdown()

    async def tick(self) -> None:
        """One round (see the module docstring)."""
        now, wall = self._clock(), self._wall()
        try:
            # Stops first: the health the leader publishes below, and the health a follower applies,
            # already hold a stopped backend down.
            await self._sync_stops(now, wall)
            await self._follow_config()
            await self.publish_member()
            leader = await self.store.try_lead(self.holder, self.ttl)
            if leader:
                self._start_probing()
                records = {name: health_record(h, now, wall) for name, h in self.checker.healths.items()}
                # Fenced: False when the lease was lost in between (this gateway stalled past the ttl).
                leader = await self.store.publish_health(self.holder, records, wall)
            if not leader:
                await self._stop_probing()
                await self._follow(now, wall)
            self._set_leader(leader)
            await self._sync_ejections(now, wall)
        except StateStoreError as exc:
            self._store_down(exc)
            return
        if not self.store_reachable:
            self.store_reachable = True
            log.warning("state store %s answers again: sharing health", self.store.describe())

    async def shutdown(self) -> None:
        """Stop probing, release the lease at once (no ttl to wait out for a successor), close."""
        await self._stop_probing()
        if self.leader:
            with contextlib.suppress(StateStoreError):
                await self.store.resign(self.holder)
            self.leader = False
        with contextlib.suppress(StateStoreError):
            await self.store.leave(self.holder)
        await self.store.close()

    def status(self) -> dict[str, Any]:
        """A JSON-ready view for status pages."""
        return {
            "store": self.store.describe(),
            "holder": self.holder,
            "leader": self.leader,
            "probing": self.probing,
            "store_reachable": self.store_reachable,
            "applied_version": self.applied_version,
            "applied_from": self.applied_from,
        }

    @property
    def probing(self) -> bool:
        return self._probe_task is not None and not self._probe_task.done()

    # -- leadership and probing ------------------------------------------------------------------

    def _set_leader(self, leader: bool) -> None:
        if leader != self.leader:
            if leader:
                log.info("this gateway (%s) now probes the backends for all", self.holder)
            else:
                log.info("this gateway (%s) no longer probes; following the lease holder", self.holder)
        self.leader = leader

    def _store_down(self, exc: StateStoreError) -> None:
        # Probe for ourselves: a gateway must not route on health nobody refreshes.
        self._start_probing()
        self.leader = False
        if self.store_reachable:
            self.store_reachable = False
            log.warning("%s; probing locally until the state store answers again", exc)

    def _start_probing(self) -> None:
        if self.probing:
            return
        self._probe_stop = asyncio.Event()
        self._probe_task = asyncio.create_task(self.checker.run(self._probe_stop), name="health-checker")

    async def _stop_probing(self) -> None:
        task, self._probe_task = self._probe_task, None
        if task is None:
            return
        self._probe_stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- health ----------------------------------------------------------------------------------

    async def _follow(self, now: float, wall: float) -> None:
        snapshot = await self.store.read_health()
        if snapshot is None or snapshot.version == self.applied_version:
            return
        if wall - snapshot.published_at > self.stale_after:
            return
        for name, record in snapshot.backends.items():
            health = self.checker.healths.get(name)
            if health is None:  # a backend another config has and ours has not
                continue
            try:
                transition = apply_health_record(health, record, now, wall)
            except ValueError as exc:
                log.debug("%s", exc)
                continue
            if transition is not None:
                # The lease holder logs transitions; here they only count (each gateway's metrics).
                log.debug("from %s: %s", snapshot.holder, transition)
                if self._on_transition is not None:
                    self._on_transition(transition)
        self.applied_version = snapshot.version
        self.applied_from = snapshot.holder

    # -- stops -----------------------------------------------------------------------------------

    @property
    def config_primed(self) -> bool:
        """Whether a round has read the store's reload announcement yet (later ones are acted on)."""
        return self._config_primed

    async def announce_config(self, announcement: str) -> None:
        """Tell the other gateways sharing this store to reload (raises StateStoreError)."""
        self._seen_config = announcement  # our own: not to be acted on when read back
        self._config_primed = True
        await self.store.publish_config(announcement)

    async def _follow_config(self) -> None:
        current = await self.store.read_config()
        if not self._config_primed:
            self._config_primed, self._seen_config = True, current
            return
        if current is None or current == self._seen_config:
            return
        self._seen_config = current
        if self.on_config_announced is not None:
            self.on_config_announced(current)

    # -- members ---------------------------------------------------------------------------------

    async def publish_member(self) -> None:
        """Say this gateway is alive, with the announcement it last answered and its `config_report`
        (every round; at once after a reload, so nobody waits a round for it). Raises StateStoreError."""
        record = {"announcement": self._seen_config, "report": self.config_report}
        await self.store.publish_member(self.holder, orjson.dumps(record).decode(), self._wall())

    async def members(self) -> dict[str, dict[str, Any]]:
        """Every gateway seen alive within the lease's ttl: holder -> {"announcement", "report"}."""
        out: dict[str, dict[str, Any]] = {}
        for holder, raw in (await self.store.read_members(self._wall() - self.ttl)).items():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(raw)
                if isinstance(record, dict):
                    out[holder] = record
        return out

    def stopped(self, backend: str, why: str) -> None:
        """This gateway's supervisor stopped `backend` on purpose: every gateway sharing the state holds
        it down from the next round on (this one already does)."""
        self._own_stops[backend] = why
        self._lifted.discard(backend)

    def started(self, backend: str) -> None:
        """This gateway's supervisor is starting `backend`: a stop of it ends everywhere."""
        if self._own_stops.pop(backend, None) is not None:
            self._lifted.add(backend)

    async def _sync_stops(self, now: float, wall: float) -> None:
        for name in sorted(self._lifted):
            await self.store.clear_stop(name)
            self._lifted.discard(name)
        for name, reason in self._own_stops.items():
            await self.store.publish_stop(name, reason, wall + self.stale_after)
        held = await self.store.read_stops(wall)
        for name, health in self.checker.healths.items():
            why = held.get(name)
            if why is not None:
                self._from_store[name] = why
                if health.stopped == why:
                    continue
                transition = health.mark_stopped(why, now)
            elif name in self._from_store:
                taken = self._from_store.pop(name)
                if health.stopped != taken or name in self._own_stops:
                    continue  # stopped since for another reason (idle, by this gateway): that holds
                # Started again by the gateway that stopped it: loading until a probe finds it serving.
                transition = health.mark_launching("started again by its operator", now)
            else:
                continue
            if transition is not None and self._on_transition is not None:
                self._on_transition(transition)

    # -- ejections -------------------------------------------------------------------------------

    async def _sync_ejections(self, now: float, wall: float) -> None:
        targets: dict[str, TargetState] = {
            t.name: t for route in self._table().routes.values() for t in route.targets
        }
        for key, target in targets.items():
            until = target.detector.ejected_until()
            if until is None or until <= now or self._published.get(key) == until:
                continue
            epoch = to_epoch(until, now, wall)
            await self.store.publish_ejection(key, epoch, target.detector.ejections)
            self._published[key] = until
            self._seen_remote[key] = epoch
        for key, ejection in (await self.store.read_ejections(wall)).items():
            ejected = targets.get(key)
            seen = self._seen_remote.get(key)
            if ejected is None or (seen is not None and ejection.until <= seen):
                continue
            self._seen_remote[key] = ejection.until
            local_until = to_local(ejection.until, now, wall)
            if ejected.detector.adopt_ejection(local_until, ejection.count):
                self._published[key] = local_until
                log.info("target %s ejected by another gateway for %.1fs", key, max(0.0, local_until - now))
        for known in (self._published, self._seen_remote):
            for key in [k for k in known if k not in targets]:
                del known[key]


async def _uncancelled(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end even if the caller is cancelled meanwhile (then re-raise the cancel):
    the gateway sets its stop event and cancels this task right after, and a lease release or a store
    close cut in half would leave a connection behind."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise
