"""Retry policy as pure functions: backoff with full jitter, one deadline per request, what to retry.

The retry loop itself lives in the data plane; it asks these functions, with its own clock and
random generator, whether and when to try the next candidate. Decisions key on `FailureClass`:

| class            | next candidate? | wait before it                                            |
|------------------|-----------------|-----------------------------------------------------------|
| client_error     | never           | -- the request itself is wrong; another backend agrees    |
| connect, auth,   | yes             | none: the failure is about that backend, not the others   |
| model_not_found  |                 |                                                           |
| timeout          | yes             | none: the time is already spent                           |
| overloaded       | yes             | Retry-After on the same backend (longer than              |
|                  |                 | max_retry_after: not retried there), else none            |
| loading, 5xx     | yes             | jittered backoff on the same backend, else none           |

`auth` is retried on *another backend* only: a wrong api_key for one backend is a configuration error
(logged, and reported by the health view and alerts), never retried on that backend, and a fallback
with its own key may still answer. A request the backend dropped without answering
(`UpstreamFailure.request_suspect`) is not retried at all: see gateway.forward.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
from dataclasses import dataclass

from aifabric.config.schema import RetryConfig
from aifabric.core import FailureClass

__all__ = ["Deadline", "backoff", "parse_retry_after", "retry_delay"]

# Failures that say nothing about the next candidate and need no wait even on the same backend.
_IMMEDIATE = frozenset(
    {FailureClass.CONNECT, FailureClass.AUTH, FailureClass.MODEL_NOT_FOUND, FailureClass.TIMEOUT}
)


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))].

    `attempt` counts retries from 1. Full jitter (AWS architecture blog, "Exponential Backoff And
    Jitter") spreads the retries of many clients instead of synchronising them.
    """
    if attempt < 1 or base <= 0 or cap <= 0:
        return 0.0
    ceiling = min(cap, base * math.pow(2.0, min(attempt - 1, 62)))
    return rng.uniform(0.0, ceiling)


@dataclass(slots=True, init=False)
class Deadline:
    """One overall time budget for a request, all attempts and waits included. Not changed once made
    (not `frozen`: a frozen dataclass's `__init__` is interpreted Python even where mypyc compiles the
    module, and one is made per request; this one is compiled)."""

    start: float
    budget: float

    def __init__(self, start: float, budget: float) -> None:
        self.start = start
        self.budget = budget

    @property
    def at(self) -> float:
        return self.start + self.budget

    def remaining(self, now: float) -> float:
        return max(0.0, self.at - now)

    def expired(self, now: float) -> bool:
        return now >= self.at

    def try_timeout(self, now: float, per_try: float) -> float:
        """The timeout of the next attempt: the per-try timeout, cut to what the deadline leaves."""
        return min(per_try, self.remaining(now))


def retry_delay(
    failure: FailureClass,
    retry_after: float | None,
    attempt: int,
    cfg: RetryConfig,
    rng: random.Random,
    *,
    same_backend: bool = True,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the request must not be retried.

    `attempt` is the number of attempts made so far (1 after the first failure); there is no next
    one once it reaches `cfg.max_attempts`. `same_backend` says whether the next candidate is on the
    backend that just failed: a backend's Retry-After or backoff says nothing about a different
    backend, which is tried at once. The caller still checks the delay against its `Deadline`.
    """
    if not failure.retryable or attempt >= cfg.max_attempts:
        return None
    if not same_backend or failure in _IMMEDIATE:
        return 0.0
    if failure is FailureClass.OVERLOADED and retry_after is not None:
        # Honour the backend's wish, but never hold a request longer than the operator allows: past
        # that, the client gets the 429 and its Retry-After at once (waiting part of it and asking
        # again early would only earn another 429).
        return max(0.0, retry_after) if retry_after <= cfg.max_retry_after else None
    return backoff(attempt, base=cfg.backoff_base, cap=cfg.backoff_max, rng=rng)


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3).

    None when absent or unreadable; never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT; a naive parse means "-0000"
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now_epoch)
