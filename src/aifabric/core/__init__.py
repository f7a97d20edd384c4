"""The shared vocabulary of aifabric: the closed sets and small state every layer speaks.

It imports nothing else of the project (import-linter checks it), so any module may import it:

    FailureClass        why one attempt at one target failed (core.failures)
    Outcome             how an attempt that did not fail ended: ok, or a route the target lacks
    BackendState        what the fabric believes of a backend; ROUTABLE, the states that get requests
    Dormancy            why a backend not serving now is expected not to (host off, engine or model asleep)
    ProbeResult         what one active health check found (written by backends, read by health)
    BackendHealth       one backend's health and the pure state machine probes drive (core.health)
    Transition          a change of a backend's state, logged and alerted once
    openai_error_type   HTTP status -> OpenAI error `type` (core.openai_errors)
    exit codes          `aifabric.core.exit_codes`: the statuses every command exits with
"""

from aifabric.core.failures import FailureClass, Outcome
from aifabric.core.health import (
    ROUTABLE,
    BackendHealth,
    BackendState,
    Dormancy,
    ProbeResult,
    Transition,
)
from aifabric.core.openai_errors import OPENAI_ERROR_TYPES, openai_error_type

__all__ = [
    "OPENAI_ERROR_TYPES",
    "ROUTABLE",
    "BackendHealth",
    "BackendState",
    "Dormancy",
    "FailureClass",
    "Outcome",
    "ProbeResult",
    "Transition",
    "openai_error_type",
]
