"""The operator's word on requests a backend dropped (closed the connection before any response byte).

The forwarder tries such a request once more on another target to tell whether the request or the
backend is the cause (see gateway.forward). Either verdict is news to the operator: a backend that
crashes on some requests, or clients sending requests upstream parsers choke on. One WARNING per backend
per `interval` (a flood of such requests must not flood the log), naming the backend and a request id
to look for in the access log; the others in the interval are counted into the next line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

__all__ = ["DropWarnings"]

log = logging.getLogger("aifabric.gateway")


class DropWarnings:
    """Rate-limited warnings about dropped requests, per backend (clock injected)."""

    __slots__ = ("_clock", "_interval", "_last", "_since")

    def __init__(self, clock: Callable[[], float], interval: float = 60.0) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}  # backend -> when its last line was written
        self._since: dict[str, int] = {}  # backend -> drops not written since then

    def _due(self, backend: str) -> int | None:
        """The drops held back since the last line when one is due now, else None (and one more held)."""
        now = self._clock()
        last = self._last.get(backend)
        if last is not None and now - last < self._interval:
            self._since[backend] = self._since.get(backend, 0) + 1
            return None
        self._last[backend] = now
        return self._since.pop(backend, 0)

    def backend_caused(self, backend: str, served_by: str, request_id: str, role: str) -> None:
        """`backend` dropped the request that `served_by` then served: the backend is the cause."""
        held = self._due(backend)
        if held is not None:
            log.warning(
                "backend %s closed the connection without answering request %s of role %s, which "
                "backend %s then served: the backend is the cause (a crash or a restart?)%s",
                backend,
                request_id,
                role,
                served_by,
                _more(held),
            )

    def request_caused(self, backends: Iterable[str], request_id: str, role: str) -> None:
        """Every one of `backends` dropped the request: the request is the cause (answered 502)."""
        names = list(dict.fromkeys(backends))
        for backend in names:
            held = self._due(backend)
            if held is not None:
                log.warning(
                    "backend %s closed the connection without answering request %s of role %s, and so "
                    "did %s: the request is the cause (deep nesting, an oversized field?), answered "
                    "502 upstream_dropped_request and charged to no backend%s",
                    backend,
                    request_id,
                    role,
                    ", ".join(name for name in names if name != backend) or "its retry on the same backend",
                    _more(held),
                )


def _more(held: int) -> str:
    return f" ({held} more drops by it since its last such line)" if held else ""
