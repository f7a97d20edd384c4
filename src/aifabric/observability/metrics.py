"""Prometheus metrics of the gateway, attached through hooks (the forwarder never imports this).

Counters are plain dicts keyed by label tuples: an increment on the hot path is one dict update.
Gauges that describe state (backend state, ejections, outstanding) are read from the routing table
at scrape time instead of being kept up to date on every request.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sized
from typing import TYPE_CHECKING, Protocol

from aifabric.core import FailureClass, Outcome
from aifabric.errors import ApiError
from aifabric.routing.load import estimate
from aifabric.routing.overflow import all_saturated

if TYPE_CHECKING:
    from aifabric.http.server import Response, StreamingResponse
    from aifabric.routing.table import RoutingTable
    from aifabric.routing.target import TargetState

__all__ = ["GatewayMetrics", "render_metrics"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class AttemptRequest(Protocol):
    """What `on_attempt` reads of the forwarder's request (`gateway.forward.ForwardRequest`)."""

    @property
    def route(self) -> _Named: ...

    @property
    def overflowed(self) -> bool: ...

    @property
    def attempts(self) -> Sized: ...


class AttemptOutcome(Protocol):
    """What `on_attempt` reads of one attempt (`gateway.forward.Attempt`)."""

    @property
    def failure(self) -> FailureClass | None: ...

    @property
    def outcome(self) -> Outcome: ...


_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The gateway's own time per request is tens to hundreds of microseconds (bench/README.md).
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


WAKE_RESULTS = ("sent", "failed")  # the `result` label of aifabric_host_wakes_total


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


class _Histogram:
    __slots__ = ("buckets", "counts", "n", "total")

    def __init__(self, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, label: str, value: str) -> list[str]:
        """The `_bucket`, `_sum` and `_count` samples, cumulative as Prometheus reads them."""
        out = []
        cumulative = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f"{name}_bucket{_labels((label, 'le'), (value, le))} {cumulative}")
        out.append(f"{name}_sum{_labels((label,), (value,))} {self.total}")
        out.append(f"{name}_count{_labels((label,), (value,))} {self.n}")
        return out


def _overhead_histogram() -> _Histogram:
    return _Histogram(_OVERHEAD_BUCKETS)


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str], int] = defaultdict(int)  # (role, status)
        self.latency: defaultdict[str, _Histogram] = defaultdict(_Histogram)  # role
        self.overhead: defaultdict[str, _Histogram] = defaultdict(_overhead_histogram)  # role
        self.attempts: defaultdict[tuple[str, str, str], int] = defaultdict(int)  # (role, backend, outcome)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)  # (type, status)
        self.transitions: defaultdict[tuple[str, str], int] = defaultdict(int)  # (backend, to)
        self.overflowed: defaultdict[str, int] = defaultdict(int)  # requested role
        # Wakes of sleeping hosts (the built-in host_woken / host_wake_failed): (host, "sent" | "failed").
        # Every host with `wake:` has both series from the start (at 0), for increase() in the rules.
        self.wakes: defaultdict[tuple[str, str], int] = defaultdict(int)

    # -- hooks ------------------------------------------------------------------------------------
    def on_request(
        self, response: Response | StreamingResponse, seconds: float, overhead: float | None = None
    ) -> None:
        """One answered request: its time to response headers and, when a backend was asked, the
        gateway's own share of it (`overhead`: the time not spent waiting on backends)."""
        role = ""
        for name, value in response.headers:
            if name == "x-aifabric-requested-role":
                role = value
                break
        self.requests[(role, str(response.status))] += 1
        self.latency[role].observe(seconds)
        if overhead is not None:
            self.overhead[role].observe(overhead)

    def on_attempt(
        self, req: AttemptRequest, target: TargetState, attempt: AttemptOutcome, seconds: float
    ) -> None:
        outcome = str(attempt.outcome if attempt.failure is None else attempt.failure)
        self.attempts[(req.route.name, target.backend.name, outcome)] += 1
        if req.overflowed and len(req.attempts) == 1:  # once per request, at its first attempt
            self.overflowed[req.route.name] += 1

    def on_error(self, exc: ApiError) -> None:
        self.errors[(exc.type, str(exc.status))] += 1

    def expect_wakes(self, hosts: Iterable[str]) -> None:
        """The hosts that may be woken (`hosts.NAME.wake`): their counters exist at 0 from now on."""
        for host in hosts:
            for result in WAKE_RESULTS:
                self.wakes[(host, result)] += 0

    def on_wake(self, host: str, ok: bool) -> None:
        """The gateway tried to wake `host`: the packet or command was sent (`ok`), or failed."""
        self.wakes[(host, WAKE_RESULTS[0] if ok else WAKE_RESULTS[1])] += 1

    def on_transition(self, transition: object) -> None:
        backend = getattr(transition, "backend", "")
        new = getattr(transition, "new", "")
        self.transitions[(str(backend), str(new))] += 1


def render_metrics(metrics: GatewayMetrics, table: RoutingTable, now: float) -> bytes:
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("aifabric_requests_total", "counter", "API requests answered, by requested role and status.")
    for (role, status), n in sorted(metrics.requests.items()):
        out.append(f"aifabric_requests_total{_labels(('role', 'status'), (role, status))} {n}")
    family("aifabric_request_duration_seconds", "histogram", "Time to response headers, by requested role.")
    for role, h in sorted(metrics.latency.items()):
        out += h.lines("aifabric_request_duration_seconds", "role", role)
    family(
        "aifabric_gateway_overhead_seconds",
        "histogram",
        "The gateway's own time per forwarded request, by requested role: time to response headers less "
        "the time spent waiting on backends (attempts, to the body or a stream's first byte; queues; retry "
        "waits).",
    )
    for role, h in sorted(metrics.overhead.items()):
        out += h.lines("aifabric_gateway_overhead_seconds", "role", role)
    family(
        "aifabric_upstream_attempts_total",
        "counter",
        "Attempts at backends, by outcome (ok, failure class, or route_missing).",
    )
    for key, n in sorted(metrics.attempts.items()):
        out.append(f"aifabric_upstream_attempts_total{_labels(('role', 'backend', 'outcome'), key)} {n}")
    family("aifabric_errors_total", "counter", "Errors answered by the gateway itself, by type and status.")
    for err_key, n in sorted(metrics.errors.items()):
        out.append(f"aifabric_errors_total{_labels(('type', 'status'), err_key)} {n}")
    family("aifabric_backend_transitions_total", "counter", "Backend health state changes, by new state.")
    for tr_key, n in sorted(metrics.transitions.items()):
        out.append(f"aifabric_backend_transitions_total{_labels(('backend', 'state'), tr_key)} {n}")
    family(
        "aifabric_overflow_total",
        "counter",
        "Requests sent to the role's fallbacks because every target of its own was saturated (overflow:).",
    )
    # A role that may overflow has its counter from the start (at 0), so a dashboard or an alert that
    # reads its rate has a series before the first overflow.
    overflowed = {r.name: 0 for r in table.routes.values() if r.config.overflow is not None}
    overflowed.update(metrics.overflowed)
    for role, n in sorted(overflowed.items()):
        out.append(f"aifabric_overflow_total{_labels(('role',), (role,))} {n}")
    family(
        "aifabric_host_wakes_total",
        "counter",
        "Wakes of sleeping hosts the gateway made, by host and result (sent, failed): host_woken, "
        "host_wake_failed.",
    )
    for wake_key, n in sorted(metrics.wakes.items()):
        out.append(f"aifabric_host_wakes_total{_labels(('host', 'result'), wake_key)} {n}")
    family(
        "aifabric_role_saturated",
        "gauge",
        "1 while every available target of the role is saturated by its overflow: bounds.",
    )
    for route in table.routes.values():
        if route.config.overflow is not None:
            full = all_saturated(route.targets, now, route.config.overflow)
            out.append(f"aifabric_role_saturated{_labels(('role',), (route.name,))} {1 if full else 0}")
    family("aifabric_backend_up", "gauge", "1 when the backend is routable (unknown, up or degraded).")
    family("aifabric_backend_state", "gauge", "The backend's health state (1 for the current state).")
    # What the built-in alert rules read besides the state, for the shipped Prometheus rules to mirror them.
    family("aifabric_backend_always_on", "gauge", "0 for a backend on a workstation (always_on: false).")
    family(
        "aifabric_backend_model_mismatch",
        "gauge",
        "1 while the backend serves other model ids than configured.",
    )
    for name, health in sorted(table.healths.items()):
        backend = _labels(("backend",), (name,))
        out.append(f"aifabric_backend_up{backend} {1 if health.routable else 0}")
        out.append(f"aifabric_backend_state{_labels(('backend', 'state'), (name, str(health.state)))} 1")
        out.append(f"aifabric_backend_always_on{backend} {1 if health.always_on else 0}")
        out.append(f"aifabric_backend_model_mismatch{backend} {1 if health.mismatches else 0}")
    family(
        "aifabric_target_available", "gauge", "1 when the target may be sent requests (health and ejection)."
    )
    family("aifabric_target_outstanding", "gauge", "Requests in flight to the target.")
    family(
        "aifabric_target_queue",
        "gauge",
        "Requests estimated to wait at the target's engine (its signals and the gateway's in-flight count).",
    )
    for route in table.routes.values():
        for t in route.targets:
            labels = _labels(("role", "backend", "model"), (route.name, t.backend.name, t.model))
            out.append(f"aifabric_target_available{labels} {1 if t.available(now) else 0}")
            out.append(f"aifabric_target_outstanding{labels} {t.outstanding}")
            out.append(f"aifabric_target_queue{labels} {estimate(t).waiting:g}")
    # The targets' own success and failure counts (what /status shows per target), as counters so that
    # `serve --workers N` sums them like the others (observability.merged). Keyed by the target's role:
    # /status names it so.
    family(
        "aifabric_target_results_total",
        "counter",
        "Attempts at the target settled as a success or a failure (the outlier detector's verdicts).",
    )
    seen: set[tuple[str, str, str]] = set()
    for route in table.routes.values():
        for t in route.targets:
            key = (t.role, t.backend.name, t.model)
            if key not in seen:
                seen.add(key)
                for result, n in (("success", t.successes), ("failure", t.failures)):
                    labels = _labels(("role", "backend", "model", "result"), (*key, result))
                    out.append(f"aifabric_target_results_total{labels} {n}")
    return ("\n".join(out) + "\n").encode()
