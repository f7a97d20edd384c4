"""Load of a target, estimated from its engine's own signals and the gateway's live in-flight count.

Two sources, neither enough alone:

- the engine's signals, read by its backend's probe every `probe_interval` (stale by up to that long):
  vLLM's requests running / waiting and KV-cache use (`/metrics`), llama-server's busy and total slots
  (`/slots`) and deferred requests (`/metrics`);
- the requests this gateway has in flight to the backend (`BackendHealth.in_flight`), live.

The estimate takes the larger of the two totals (the engine's count includes our requests and other
clients'; ours includes what was sent since the last probe) and splits it into running and waiting by
the engine's parallel capacity where it is known (llama-server's slots; vLLM's running batch once it
queues). A kind that exposes nothing (a cloud, Ollama, TEI) has only the in-flight count, and every
request of it counts as waiting: the gateway cannot tell its running requests from its queued ones.

Everything here is pure: a function of the target's state, no clock, no I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from aifabric.config.schema import OverflowConfig
from aifabric.routing.target import TargetState

__all__ = ["LoadEstimate", "estimate", "in_flight", "least_load", "load_view", "process_cap", "saturated"]


@dataclass(frozen=True, slots=True)
class LoadEstimate:
    """What the gateway believes one target is doing now."""

    running: float  # requests being decoded
    waiting: float  # requests queued behind them (for a kind without signals: every in-flight one)
    capacity: float | None  # requests decoded in parallel, when known
    utilization: float  # 0..1 of the engine's parallel capacity (slots, KV cache); 0 when unknown
    signal: bool  # the engine reported its load (else only the gateway's in-flight count is known)

    @property
    def wait_rounds(self) -> float:
        """How many times the engine must finish its running batch before a new request starts."""
        if self.waiting <= 0:
            return 0.0
        return self.waiting / max(self.capacity or 1.0, 1.0)

    def estimated_wait(self, service_time: float) -> float | None:
        """Seconds a new request would wait for a slot, given the time one request takes there
        (None while that time is unknown: the target has not answered yet)."""
        if self.waiting <= 0:
            return 0.0
        if service_time <= 0:
            return None
        return self.wait_rounds * service_time


def in_flight(t: TargetState) -> int:
    """The requests this process has in flight to the target's backend (every role's), live."""
    return max(t.health.in_flight, t.outstanding)


def process_cap(max_concurrency: int, share: float) -> int:
    """This process's part of a backend's `max_concurrency` when `share` (1/N) of it is this process's:
    at least one place, so N processes under a cap below N still serve."""
    return max(1, math.floor(max_concurrency * share + 1e-9))


def estimate(t: TargetState) -> LoadEstimate:
    """The target's load (see the module docstring): engine signals merged with the live in-flight count."""
    load = t.health.load
    in_flight_now = float(in_flight(t))
    slots = load.get("slots_total")
    if slots is not None and slots > 0:  # llama-server with /slots (and maybe /metrics' deferred count)
        # Deferred requests are exactly those queued for a slot, other clients' too (checked on the real
        # engine, docs/routing.md), but only as of the last probe: in_flight covers ours since then.
        reported = load.get("slots_busy", 0.0) + load.get("requests_waiting", 0.0)
        total = max(reported, in_flight_now)
        running = min(total, slots)
        return LoadEstimate(running, total - running, slots, running / slots, True)
    if "requests_running" in load or "requests_waiting" in load:  # vLLM, llama-server with /metrics only
        running = load.get("requests_running", 0.0)
        waiting = load.get("requests_waiting", 0.0)
        fresh = max(0.0, in_flight_now - running - waiting)  # sent since the probe: queued if it queues
        capacity = running if waiting > 0 and running > 0 else None
        if waiting > 0:
            waiting += fresh
        else:
            running += fresh
        kv = load.get("kv_cache_usage", 0.0)
        return LoadEstimate(running, waiting, capacity, min(1.0, max(0.0, kv)), True)
    return LoadEstimate(0.0, in_flight_now, None, 0.0, False)


def load_view(t: TargetState) -> dict[str, object]:
    """The estimate as /status shows it next to each target."""
    est = estimate(t)
    return {
        "running": est.running,
        "waiting": est.waiting,
        "capacity": est.capacity,
        "utilization": round(est.utilization, 3),
        "source": "engine" if est.signal else "in_flight",
    }


def saturated(t: TargetState, overflow: OverflowConfig) -> bool:
    """Whether the target is too busy to take more by the role's `overflow:` bounds."""
    est = estimate(t)
    if overflow.queue_depth is not None and est.waiting >= overflow.queue_depth:
        return True
    if overflow.estimated_wait is not None:
        wait = est.estimated_wait(t.ewma_latency)
        if wait is not None and wait >= overflow.estimated_wait and est.waiting > 0:
            return True
    return False


def _cost(t: TargetState) -> tuple[float, float]:
    """Lower is better: first how long a new request would queue, then how busy the engine is."""
    est = estimate(t)
    w = t.weight if t.weight > 0 else 0.0
    if w <= 0:
        return (math.inf, math.inf)
    busy = est.utilization if est.signal else 0.0
    if est.signal and est.capacity:
        busy = max(busy, est.running / est.capacity)
    return (est.wait_rounds / w, busy / w)


def least_load(targets: Sequence[TargetState], rng: random.Random) -> list[TargetState]:
    """Least loaded first by the engines' own signals (queue, then utilization) per weight; ties,
    e.g. an idle estate, by a weighted random draw so traffic still splits by weight. O(targets)."""
    if len(targets) < 2:  # one target (most roles): nothing to rank, and no estimate on the hot path
        return list(targets)
    keyed = []
    for t in targets:
        u = rng.random() or 1e-12
        draw = -math.log(u) / t.weight if t.weight > 0 else math.inf
        keyed.append((_cost(t), draw, t))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [k[2] for k in keyed]
