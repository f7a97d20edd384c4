"""Health and ejections to and from the shared, JSON-ready form: pure functions, clocks passed in.

A `BackendHealth` keeps its times on the process's monotonic clock, which means nothing in another
process or on another machine. Shared records carry epoch seconds instead: `since` and `last_probe_at`
are converted on the way out (`wall - (mono - t)`) and back in. Only what a probe decides is shared;
the thresholds and `always_on` come from each gateway's own config.
"""

from __future__ import annotations

from typing import Any

from aifabric.core import BackendHealth, BackendState, FailureClass, Transition

__all__ = ["apply_health_record", "health_record", "to_epoch", "to_local"]


def to_epoch(t: float, now: float, wall: float) -> float:
    """A time on this process's clock (`now` is that clock's current reading) as epoch seconds."""
    return wall - (now - t)


def to_local(epoch: float, now: float, wall: float) -> float:
    """Epoch seconds as a time on this process's clock."""
    return now - (wall - epoch)


def health_record(health: BackendHealth, now: float, wall: float) -> dict[str, Any]:
    """What the lease holder publishes about one backend."""
    return {
        "state": str(health.state),
        "reason": health.reason,
        "since": to_epoch(health.since, now, wall),
        "last_probe_at": (
            to_epoch(health.last_probe_at, now, wall) if health.last_probe_at is not None else None
        ),
        "last_probe_latency": health.last_probe_latency,
        "served_models": list(health.served_models),
        "mismatches": list(health.mismatches),
        "load": dict(health.load),
        "failure": str(health.failure) if health.failure is not None else None,
        "consecutive_ok": health.consecutive_ok,
        "consecutive_failed": health.consecutive_failed,
    }


def apply_health_record(
    health: BackendHealth, record: dict[str, Any], now: float, wall: float
) -> Transition | None:
    """Overwrite what a probe decides with a published record; the Transition if the state changed.
    A backend stopped by an operator stays down with that reason, whatever the record says.

    A record that does not parse (another version of aifabric wrote it) raises ValueError and leaves
    `health` untouched: every field is checked before any is written."""
    try:
        state = BackendState(record["state"])
        reason = str(record["reason"])
        since = to_local(float(record["since"]), now, wall)
        probe_at = record.get("last_probe_at")
        last_probe_at = to_local(float(probe_at), now, wall) if probe_at is not None else None
        latency = record.get("last_probe_latency")
        last_probe_latency = float(latency) if latency is not None else None
        served = tuple(str(m) for m in record.get("served_models", ()))
        mismatches = [str(m) for m in record.get("mismatches", ())]
        load = {str(k): float(v) for k, v in dict(record.get("load", {})).items()}
        failure_name = record.get("failure")
        failure = FailureClass(failure_name) if failure_name is not None else None
        consecutive_ok = int(record.get("consecutive_ok", 0))
        consecutive_failed = int(record.get("consecutive_failed", 0))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"unreadable health record for backend {health.name}: {exc}") from exc

    if health.stopped is not None:
        # Stopped on purpose (here, or on another gateway through the shared stops): the lease holder's
        # probes may not have caught up with the stop yet, and cannot overrule it anyway.
        state, reason = BackendState.DOWN, health.stopped
    old = health.state
    health.state = state
    health.reason = reason
    health.since = since
    health.last_probe_at = last_probe_at
    health.last_probe_latency = last_probe_latency
    if served != health.served_models:
        # Only a new list is assigned: targets recompute their model check when the tuple changes.
        health.served_models = served
    health.mismatches = mismatches
    health.load = load
    health.failure = failure
    health.consecutive_ok = consecutive_ok
    health.consecutive_failed = consecutive_failed
    if state is old:
        return None
    return Transition(health.name, old, state, reason)
