"""When to restart a crashed local backend: exponential backoff, as a pure policy.

A backend that crashes right after starting is restarted after 1 s, then 2 s, 4 s, ... up to a cap, so a
broken one does not spin the CPU; one that ran a while before crashing starts the count over. During the
first start (never ready yet) the supervisor gives up after `max_start_failures` crashes and says why,
rather than retrying a model that cannot load forever. Times are plain numbers: tests pass them in.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RestartDecision", "RestartPolicy"]


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    delay: float  # seconds to wait before starting it again
    failures: int  # consecutive quick failures, this one included


@dataclass(frozen=True)
class RestartPolicy:
    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 30.0
    stable_after: float = 60.0  # a run this long resets the failure count
    max_start_failures: int = 4  # crashes before the backend was ever ready, then give up

    def delay(self, failures: int) -> float:
        """Backoff before restart number `failures` (1-based): base, base*factor, ... capped."""
        if failures < 1:
            return 0.0
        return float(min(self.max_delay, self.base * self.factor ** (failures - 1)))

    def on_exit(self, *, previous_failures: int, uptime: float, ever_ready: bool) -> RestartDecision:
        """What to do when a backend exited unexpectedly after running `uptime` seconds."""
        failures = 1 if uptime >= self.stable_after else previous_failures + 1
        if not ever_ready and failures >= self.max_start_failures:
            return RestartDecision(restart=False, delay=0.0, failures=failures)
        return RestartDecision(restart=True, delay=self.delay(failures), failures=failures)
