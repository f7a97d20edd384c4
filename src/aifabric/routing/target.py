"""The runtime state of one target (one backend + model id) of one role.

A target is routable when both signals allow it: the active health check of its backend (shared by
every target on that backend) and the passive outlier detector of this target. Counters here are
written by the data plane on the event loop; no locks are needed within one process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aifabric.backends.base import adapter_for
from aifabric.config.schema import BackendConfig, HealthCheckConfig
from aifabric.core import ROUTABLE, BackendHealth, FailureClass
from aifabric.routing.outlier import OutlierDetector

__all__ = ["EWMA_ALPHA", "AttemptGuard", "TargetState"]

# Weight of the newest latency sample: ~the last 5 requests dominate, old slowness is forgotten fast.
EWMA_ALPHA = 0.3


@dataclass(eq=False, slots=True)
class TargetState:
    role: str
    backend: BackendConfig
    model: str  # the model id sent upstream
    health: BackendHealth
    detector: OutlierDetector = field(default_factory=OutlierDetector)
    weight: float = 1.0
    outstanding: int = 0
    ewma_latency: float = 0.0  # seconds; 0.0 until the first success
    successes: int = 0
    failures: int = 0
    _mismatch_for: tuple[str, ...] | None = field(default=None, repr=False)
    _mismatch: str | None = field(default=None, repr=False)
    # `backend.idles`, read once here: a property of the (interpreted) config, asked per request.
    idles: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.idles = self.backend.idles

    @classmethod
    def from_config(
        cls,
        role: str,
        backend: BackendConfig,
        model: str,
        health: BackendHealth,
        *,
        weight: float = 1.0,
        checks: HealthCheckConfig | None = None,
    ) -> TargetState:
        hc = checks or backend.health
        detector = OutlierDetector(
            consecutive_failures=hc.consecutive_failures,
            base_ejection=hc.base_ejection,
            max_ejection=hc.max_ejection,
        )
        return cls(role=role, backend=backend, model=model, health=health, detector=detector, weight=weight)

    @property
    def name(self) -> str:
        """How logs and headers name it: role/backend/model."""
        return f"{self.role}/{self.backend.name}/{self.model}"

    @property
    def model_mismatch(self) -> str | None:
        """Why the backend will not serve this target's model id, from its latest model list."""
        served = self.health.served_models
        if served is not self._mismatch_for:  # recomputed only when a probe brought a new list
            adapter = adapter_for(self.backend.kind)
            messages = adapter.check_models((self.model,), served, self.backend.name)
            self._mismatch = messages[0] if messages else None
            self._mismatch_for = served
        return self._mismatch

    @property
    def mismatch_blocks(self) -> bool:
        """A mismatch that would fail requests (kinds that ignore `model` answer anyway)."""
        return self.model_mismatch is not None and adapter_for(self.backend.kind).enforces_model_id

    def available(self, now: float) -> bool:
        """Health allows it AND the outlier detector allows it (and it serves the model id)."""
        return (
            self.health.state in ROUTABLE
            and self.detector.available(now)
            and self.weight > 0
            and not self.mismatch_blocks
        )

    def on_start(self, now: float) -> AttemptGuard:
        """A request is being sent: the returned guard ends the attempt exactly once."""
        self.outstanding += 1
        self.health.in_flight += 1
        self.detector.begin_attempt(now)
        return AttemptGuard(self)

    def view(self, now: float) -> dict[str, Any]:
        """One target as the data plane sees it: routable now, ejection, load, latency, drift."""
        detector = self.detector
        until = detector.ejected_until()
        return {
            "role": self.role,
            "backend": self.backend.name,
            "model": self.model,
            "available": self.available(now),
            "outlier": detector.state(now),
            "ejections": detector.ejections,
            "ejected_for_seconds": round(until - now, 3) if until is not None and until > now else None,
            "outstanding": self.outstanding,
            "ewma_latency_ms": round(self.ewma_latency * 1000, 1) if self.ewma_latency > 0 else None,
            "successes": self.successes,
            "failures": self.failures,
            "model_mismatch": self.model_mismatch,
        }


class AttemptGuard:
    """One started attempt at a target, from `TargetState.on_start()` to its one verdict.

    Success, failure or abandon: the first call settles it and the others do nothing, whoever makes
    them (the forwarder before the first byte, the stream relay after it, a cancellation in between),
    so `outstanding` and the outlier detector's half-open trial can neither leak nor be released twice.
    """

    __slots__ = ("on_settle", "settled", "target")

    def __init__(self, target: TargetState) -> None:
        self.target = target
        self.settled = False
        # Called once when the attempt settles, however it does: the forwarder gives back the
        # backend's place (max_concurrency) through it.
        self.on_settle: Callable[[], None] | None = None

    def _settle(self) -> None:
        self.settled = True
        if self.on_settle is not None:
            self.on_settle()

    def success(self, latency: float, now: float) -> None:
        """The backend answered (or, for a client's own 4xx, was not at fault): latency feeds the average."""
        if self.settled:
            return
        self._settle()
        t = self.target
        t.outstanding = max(0, t.outstanding - 1)
        t.health.in_flight = max(0, t.health.in_flight - 1)
        t.successes += 1
        if t.ewma_latency <= 0.0:
            t.ewma_latency = latency
        else:
            t.ewma_latency += EWMA_ALPHA * (latency - t.ewma_latency)
        t.detector.record_success(now)

    def failure(self, failure: FailureClass, now: float) -> bool:
        """A failed attempt; True when it ejected the target (the caller logs that once)."""
        if self.settled:
            return False
        self._settle()
        t = self.target
        t.outstanding = max(0, t.outstanding - 1)
        t.health.in_flight = max(0, t.health.in_flight - 1)
        t.failures += 1
        return t.detector.record_failure(failure, now)

    def abandon(self) -> None:
        """The request ended without a verdict (the client went away): no health signal."""
        if self.settled:
            return
        self._settle()
        t = self.target
        t.outstanding = max(0, t.outstanding - 1)
        t.health.in_flight = max(0, t.health.in_flight - 1)
        t.detector.abandon()
