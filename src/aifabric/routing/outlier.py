"""Passive outlier detection: real request failures eject a target for a while.

Envoy's "outlier detection" for one endpoint, kept small and pure (the clock is passed in):

    ok ──(N consecutive failures)──> ejected ──(ejection time passes)──> half_open
     ^                                  ^                                   │
     │                                  └──────(the trial request fails)────┤
     └────────────────────────(the trial request succeeds)──────────────────┘

- Only failures that say something about the target count (`FailureClass.counts_against_target`):
  a client's own 4xx never ejects anything.
- The ejection time doubles with each ejection that follows without a healthy streak in between
  (`base * 2**(n-1)`, capped), so a flapping backend is tried less and less often; a streak of
  successes forgets the history.
- Half-open allows exactly one trial request at a time until it reports back. A trial that never
  reports (a client hung up and the caller forgot `abandon`) expires after `trial_lease` seconds so
  the target cannot stay stuck.
- It works for a role with a single target: ejecting it does not fail requests by itself, the
  planner puts ejected targets last ("panic" ordering) instead of dropping them.
"""

from __future__ import annotations

from typing import Literal

from aifabric.core import FailureClass

__all__ = ["OutlierDetector", "OutlierState"]

OutlierState = Literal["ok", "ejected", "half_open"]


class OutlierDetector:
    """Ejection state of one target, driven by the outcomes of real requests."""

    __slots__ = (
        "_ejected_until",
        "_ejections",
        "_failures",
        "_streak",
        "_trial_started",
        "base_ejection",
        "consecutive_failures",
        "max_ejection",
        "reset_after",
        "trial_lease",
    )

    def __init__(
        self,
        *,
        consecutive_failures: int = 3,
        base_ejection: float = 10.0,
        max_ejection: float = 300.0,
        reset_after: int = 5,
        trial_lease: float = 300.0,
    ) -> None:
        if consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        self.consecutive_failures = consecutive_failures
        self.base_ejection = base_ejection
        self.max_ejection = max(max_ejection, base_ejection)
        self.reset_after = reset_after
        self.trial_lease = trial_lease
        self._failures = 0  # consecutive failures while not ejected
        self._ejections = 0  # ejections since the last healthy streak: drives the growth
        self._streak = 0  # consecutive successes
        self._ejected_until: float | None = None  # None: not ejected (nor half-open)
        self._trial_started: float | None = None  # the half-open trial in flight, if any

    # -- queries ---------------------------------------------------------------------------------

    def state(self, now: float) -> OutlierState:
        """What the detector says at `now`. A query: it changes nothing (half-open is a matter of time)."""
        if self._ejected_until is None:
            return "ok"
        if now < self._ejected_until:
            return "ejected"
        return "half_open"

    def available(self, now: float) -> bool:
        """Whether a request may be sent now: not ejected, or half-open with no trial in flight."""
        state = self.state(now)
        if state == "ok":
            return True
        if state == "ejected":
            return False
        return self._trial_started is None or now - self._trial_started >= self.trial_lease

    @property
    def ejections(self) -> int:
        """How many ejections in a row (without a healthy streak in between)."""
        return self._ejections

    def ejected_until(self) -> float | None:
        return self._ejected_until

    def ejection_time(self, n: int) -> float:
        """How long the n-th consecutive ejection lasts (n >= 1)."""
        # 2**(n-1) overflows float for huge n; the cap is reached long before.
        exponent = min(n - 1, 62)
        return float(min(self.max_ejection, self.base_ejection * (2**exponent)))

    # -- events ----------------------------------------------------------------------------------

    def begin_attempt(self, now: float) -> None:
        """A request is being sent to the target. In half-open it becomes the one trial."""
        if self._ejected_until is not None and now >= self._ejected_until:
            self._trial_started = now

    def abandon(self) -> None:
        """A request ended without a verdict (client disconnected): free the trial slot."""
        self._trial_started = None

    def record_success(self, now: float) -> None:
        self._failures = 0
        # Any success ends an ejection: the target evidently serves (a trial, or a request the
        # planner sent in panic mode because nothing else was left).
        self._ejected_until = None
        self._trial_started = None
        self._streak += 1
        if self._streak >= self.reset_after:
            self._ejections = 0

    def record_failure(self, failure: FailureClass, now: float) -> bool:
        """Count one failed request; True when this failure ejected the target."""
        if not failure.counts_against_target:
            return False
        self._streak = 0
        if self._ejected_until is not None:
            if now < self._ejected_until and self._trial_started is None:
                # A request sent before the ejection finishing late: it is already accounted for.
                return False
            # The half-open trial failed: eject again, for longer.
            self._eject(now)
            return True
        self._failures += 1
        if self._failures >= self.consecutive_failures:
            self._eject(now)
            return True
        return False

    def adopt_ejection(self, until: float, count: int) -> bool:
        """Take on an ejection another gateway (worker or replica) decided from its own failures:
        ejected until `until` on this detector's clock, as the `count`-th in a row. False (nothing
        changes) when this detector is already ejected at least that long."""
        if self._ejected_until is not None and self._ejected_until >= until:
            return False
        self._ejected_until = until
        self._ejections = max(self._ejections, count)
        self._trial_started = None
        self._failures = 0
        self._streak = 0
        return True

    def _eject(self, now: float) -> None:
        self._ejections += 1
        self._ejected_until = now + self.ejection_time(self._ejections)
        self._trial_started = None
        self._failures = 0

    def __repr__(self) -> str:
        return (
            f"OutlierDetector(failures={self._failures}, ejections={self._ejections}, "
            f"ejected_until={self._ejected_until})"
        )
