"""The closed set of failure classes: why one attempt at one target failed.

Every failed attempt is classified once (the upstream client for I/O, `backends._errors` for error
responses) and everything else (retry, fallback, ejection, metrics, alerts) reads the class.
"""

from __future__ import annotations

import enum

__all__ = ["FailureClass", "Outcome"]


class FailureClass(enum.StrEnum):
    """Why one attempt at one target failed. Retry, fallback, ejection, metrics and alerts key on it."""

    CONNECT = "connect"  # refused, DNS, unreachable, reset before a response
    TIMEOUT = "timeout"  # no response (or no first byte) within the per-try timeout
    LOADING = "loading"  # up but its model is not ready (llama-server 503 "Loading model", ...)
    OVERLOADED = "overloaded"  # 429, or 503 with Retry-After
    UPSTREAM_5XX = "upstream_5xx"  # any other 5xx
    MODEL_NOT_FOUND = "model_not_found"  # 404 / the backend does not serve the configured model id
    CLIENT_ERROR = "client_error"  # 4xx caused by the request itself: never retried, never ejects
    AUTH = "auth"  # 401/403 from the backend: the fabric file's api_key is wrong

    @property
    def retryable(self) -> bool:
        """Another candidate may succeed where this one failed."""
        return self not in (FailureClass.CLIENT_ERROR,)

    @property
    def counts_against_target(self) -> bool:
        """Whether the failure says something about the target's health (passive outlier detection)."""
        return self is not FailureClass.CLIENT_ERROR


class Outcome(enum.StrEnum):
    """How an attempt ended when it did not fail; a failed attempt's outcome is its `FailureClass`.
    Metrics (`aifabric_upstream_attempts_total{outcome}`) and traces name attempts by these two sets."""

    OK = "ok"  # answered (by the backend, or locally by the gateway in its place)
    # The native route does not exist on the target (gateway.missing_routes): no verdict on its health,
    # the request goes on translated or elsewhere
    ROUTE_MISSING = "route_missing"
