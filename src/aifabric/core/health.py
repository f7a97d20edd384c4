"""What the fabric believes about each backend, and the pure state machine that probes drive.

    unknown ──first probe──> whatever the probe says
    up <──> degraded          (at once: both serve; degraded says why, e.g. "12 requests waiting")
    up/degraded ──unhealthy_threshold failed probes──> down, or asleep (host with always_on: false
                                                       that does not answer: expected, not an incident)
    any ──probe says "loading"──> loading                (the backend answered: no threshold needed)
    down/asleep/loading ──healthy_threshold good probes──> up/degraded
    any ──its local supervisor stopped it (drill/operator)──> down, until started again: probes,
                                                              good or bad, do not move it (the server may
                                                              answer while it finishes its last requests,
                                                              and a refused probe is the stop's consequence)

One `BackendHealth` exists per backend and is shared by every target on it. `apply_probe` returns a
`Transition` only when the state changes, so each transition is logged exactly once by the caller.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from aifabric.core.failures import FailureClass

__all__ = ["ROUTABLE", "BackendHealth", "BackendState", "Dormancy", "ProbeResult", "Transition"]


class BackendState(enum.StrEnum):
    UNKNOWN = "unknown"  # not probed yet: routable, so a fresh gateway serves before its first probe
    LOADING = "loading"  # answers, but its model is not ready
    UP = "up"
    DEGRADED = "degraded"  # serves, but saturated or otherwise impaired; `reason` says how
    DOWN = "down"
    ASLEEP = "asleep"  # a host that may be powered off does not answer


class Dormancy(enum.StrEnum):
    """Why a backend that does not serve now is expected not to: on purpose, not an incident.

    The health view (`/status`, `aifabric health`) says which, and the status page words it: a
    powered-off workstation, an idle vLLM engine in sleep mode and a model on demand that is not
    running are all woken by the next request that needs them, but by different means.
    """

    HOST_OFF = "host_off"  # asleep: a host with always_on: false does not answer (maybe powered off)
    ENGINE_ASLEEP = "engine_asleep"  # up, but its vLLM engine was put to sleep (sleep_when_idle)
    # asleep: a local model on demand is not running (start: on_demand, idle_stop, or another member of
    # its exclusive group started); the next request for it starts it
    MODEL_STOPPED = "model_stopped"


# States in which the data plane sends requests to a backend's targets in normal (non-panic) order.
ROUTABLE = frozenset({BackendState.UNKNOWN, BackendState.UP, BackendState.DEGRADED})

_SERVING = frozenset({BackendState.UP, BackendState.DEGRADED})
_SILENT = frozenset({FailureClass.CONNECT, FailureClass.TIMEOUT})


@dataclass(frozen=True)
class ProbeResult:
    """What one active health check found (written by a backend adapter, folded in by `BackendHealth`)."""

    ok: bool  # the backend serves (up or degraded)
    state: BackendState  # up, degraded, loading or down (BackendHealth maps down to asleep by host)
    reason: str  # human words: why this state
    latency: float  # seconds, of the probe's first request
    served_models: tuple[str, ...] = ()
    load: dict[str, float] = field(default_factory=dict)
    failure: FailureClass | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    backend: str
    old: BackendState
    new: BackendState
    reason: str

    def __str__(self) -> str:
        return f"backend {self.backend}: {self.old} -> {self.new} ({self.reason})"


@dataclass(eq=False)
class BackendHealth:
    """Mutable health of one backend, written by the health checker, read by the data plane."""

    name: str
    always_on: bool = True
    healthy_threshold: int = 1
    unhealthy_threshold: int = 2
    state: BackendState = BackendState.UNKNOWN
    reason: str = "not probed yet"
    since: float = 0.0
    last_probe_at: float | None = None
    last_probe_latency: float | None = None
    served_models: tuple[str, ...] = ()
    mismatches: list[str] = field(default_factory=list)
    load: dict[str, float] = field(default_factory=dict)
    failure: FailureClass | None = None  # class of the latest failed probe
    consecutive_ok: int = 0
    consecutive_failed: int = 0
    # Requests this gateway process has in flight to the backend, all its targets (of every role)
    # together: the live half of its load, between two probes (routing.target's attempt guard keeps it).
    in_flight: int = 0
    # A vLLM engine the gateway put to sleep (sleep mode, `sleep_when_idle`): it answers probes but must
    # be sent POST /wake_up before it serves (health.engine_sleep).
    engine_asleep: bool = False
    # Set while the local supervisor (re)starts this backend: a refused probe then means "loading",
    # not "down", so requests are held (warm-up) instead of failing. Cleared by a good probe.
    launching: str | None = None
    # Set while an operator (or `aifabric drill`) has stopped this local backend: down on purpose, with
    # that reason, whatever probes see. Cleared only when its supervisor starts it again (mark_launching),
    # here or on another gateway sharing the state.
    stopped: str | None = None
    stopped_state: BackendState = BackendState.DOWN  # asleep for a model stopped on demand (mark_idle)

    @property
    def routable(self) -> bool:
        return self.state in ROUTABLE

    def apply_probe(self, result: ProbeResult, now: float) -> Transition | None:
        """Fold one probe result in; the returned Transition (if any) is the caller's to log."""
        self.last_probe_at = now
        self.last_probe_latency = result.latency
        if result.served_models:
            self.served_models = result.served_models
        self.load = dict(result.load)

        if self.stopped is not None:
            # Stopped on purpose: a probe answered by a server still finishing its last requests, or sent
            # before the stop, is no news, and "connection refused" is the stop's expected consequence.
            self.failure = result.failure
            self.consecutive_ok = 0
            return self._move(self.stopped_state, self.stopped, now)
        if result.ok:
            self.launching = None
            self.consecutive_ok += 1
            self.consecutive_failed = 0
            self.failure = None
            target = result.state if result.state in _SERVING else BackendState.UP
            if self.state in _SERVING or self.state is BackendState.UNKNOWN:
                return self._move(target, result.reason, now)
            if self.consecutive_ok >= self.healthy_threshold:
                return self._move(target, result.reason, now)
            self.reason = f"{result.reason} ({self.consecutive_ok}/{self.healthy_threshold} good probes)"
            return None

        self.consecutive_failed += 1
        self.consecutive_ok = 0
        self.failure = result.failure
        if result.state is BackendState.LOADING:
            # The backend itself said so: no need to wait for a threshold.
            return self._move(BackendState.LOADING, result.reason, now)
        if self.launching is not None and result.failure in _SILENT:
            # Refused because its supervisor is (re)starting it: loading, not an outage.
            return self._move(BackendState.LOADING, self.launching, now)
        target = self._failed_state(result)
        if self.state in _SERVING and self.consecutive_failed < self.unhealthy_threshold:
            # One lost probe on a serving backend is not an outage yet; keep routing to it.
            self.reason = (
                f"{result.reason} ({self.consecutive_failed}/{self.unhealthy_threshold} failed probes)"
            )
            return None
        return self._move(target, result.reason, now)

    def _failed_state(self, result: ProbeResult) -> BackendState:
        if not self.always_on and result.failure in _SILENT:
            return BackendState.ASLEEP
        return BackendState.DOWN

    def mark_launching(self, why: str, now: float) -> Transition | None:
        """The local supervisor is starting this backend: loading until a probe finds it serving."""
        self.launching, self.stopped = why, None
        return self._move(BackendState.LOADING, why, now)

    def mark_stopped(self, why: str, now: float) -> Transition | None:
        """The local supervisor stopped this backend on request: down at once (no threshold, no
        warm-up hold), so requests go to the role's other targets and fallbacks."""
        self.launching, self.stopped, self.stopped_state = None, why, BackendState.DOWN
        self.consecutive_ok = 0
        return self._move(BackendState.DOWN, why, now)

    def mark_idle(self, why: str, now: float) -> Transition | None:
        """A local model started on demand is not running (not started yet, or stopped when idle):
        asleep, not an outage; the next request that needs it starts it (gateway) and waits."""
        self.launching, self.stopped, self.stopped_state = None, why, BackendState.ASLEEP
        self.consecutive_ok = 0
        return self._move(BackendState.ASLEEP, why, now)

    def _move(self, new: BackendState, reason: str, now: float) -> Transition | None:
        old = self.state
        self.reason = reason
        if new is old:
            return None
        self.state = new
        self.since = now
        return Transition(self.name, old, new, reason)

    def snapshot(self, now: float) -> dict[str, object]:
        """A JSON-ready view (the health CLI and the gateway's health route)."""
        return {
            "state": str(self.state),
            "reason": self.reason,
            "for_seconds": round(max(0.0, now - self.since), 3) if self.last_probe_at is not None else None,
            "probe_latency_ms": (
                round(self.last_probe_latency * 1000, 1) if self.last_probe_latency is not None else None
            ),
            "served_models": list(self.served_models),
            "mismatches": list(self.mismatches),
            "load": dict(self.load),
            "failure": str(self.failure) if self.failure else None,
        }
