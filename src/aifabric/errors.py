"""The one exception tree of aifabric.

    FabricError
    ├── ConfigError            an operator's fabric file is wrong: file, line, what to write instead
    ├── ApiError               a request the gateway answers with an OpenAI-shaped error
    │   ├── BadRequest             400  malformed JSON, missing `model`, wrong role kind
    │   ├── Unauthorized           401  missing or wrong API key
    │   ├── Forbidden              403  an admin route asked from a client it is not open to
    │   ├── ModelNotFound          404  unknown role or alias (lists the valid names)
    │   ├── NotFound               404  no route for the method and path, no such backend (admin)
    │   ├── MethodNotAllowed       405  GET on a POST route
    │   ├── PayloadTooLarge        413  body over gateway.max_body_bytes
    │   ├── RateLimited            429  a key's or a role's requests/tokens per minute, or concurrency
    │   ├── BudgetExceeded         429  the key's budget, or every candidate backend's, is spent
    │   ├── UpstreamError          the backend answered with an error (status and Retry-After kept)
    │   ├── NoHealthyTarget        503/502/504  every candidate failed or none is usable
    │   └── OutOfResources         503  the gateway itself ran out (file descriptors, memory): never
    │                                   charged to a backend
    ├── UpstreamFailure        one failed attempt at one target, classified (FailureClass); internal
    ├── QueueFull              (tenancy.priority) a backend's queue is full; internal: an `overloaded` attempt
    ├── LocalBackendError      a local backend could not be started or supervised
    ├── StateStoreError        the state shared by gateway replicas cannot be reached or used
    └── CommandError           a CLI command failed for a reason the operator can act on

Foreign exceptions (OSError, asyncio.TimeoutError, yaml errors, ...) are translated at one boundary
each: the upstream client for I/O, the config loader for YAML. `ApiError` is turned into an HTTP
response in exactly one place (`gateway.errors`), and into a CLI exit status in exactly one place
(`cli.main`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aifabric.core import exit_codes
from aifabric.core.failures import FailureClass
from aifabric.core.openai_errors import openai_error_type

__all__ = [
    "ApiError",
    "BadRequest",
    "BudgetExceeded",
    "CommandError",
    "ConfigError",
    "ConfigProblem",
    "FabricError",
    "Forbidden",
    "LocalBackendError",
    "MethodNotAllowed",
    "ModelNotFound",
    "NoHealthyTarget",
    "NotFound",
    "OutOfResources",
    "PayloadTooLarge",
    "ProblemKind",
    "RateLimited",
    "StateStoreError",
    "Unauthorized",
    "UpstreamError",
    "UpstreamFailure",
]


class FabricError(Exception):
    """Root of every error aifabric raises on purpose."""


class ProblemKind(enum.StrEnum):
    """What a `ConfigProblem` is about, so a reader (the doctor) can group problems without reading
    their words."""

    FILE = "file"  # the fabric file itself: YAML, keys, values, references between sections
    ENV = "env"  # a ${VAR} reference that cannot be resolved, or a line of the env file


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in a fabric file, located and with the fix in words."""

    file: str
    line: int | None
    message: str
    fix: str = ""
    kind: ProblemKind = ProblemKind.FILE

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class ConfigError(FabricError):
    """The fabric file cannot be used. Carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ApiError(FabricError):
    """An error answered to an API client as `{"error": {message, type, param, code}}`."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    # The role the request asked for, once the route knows it (the usage ledger's row of a refusal).
    role: str = ""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | int | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = str(code)
        self.param = param
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400
    type = openai_error_type(status)


class Unauthorized(ApiError):
    status = 401
    type = openai_error_type(status)
    code = "invalid_api_key"


class Forbidden(ApiError):
    status = 403
    type = openai_error_type(status)
    code = "forbidden"


class ModelNotFound(ApiError):
    status = 404
    type = openai_error_type(status)
    code = "model_not_found"


class NotFound(ApiError):
    """No route for the request's method and path, or no such thing behind an operator route. Not a
    model: an unknown model is `ModelNotFound` (code model_not_found). Both are OpenAI's
    `invalid_request_error`, as api.openai.com answers an unknown URL; the Anthropic routes answer
    `not_found_error` by their own table (`dialects.messages.ANTHROPIC_ERROR_TYPES`)."""

    status = 404
    type = openai_error_type(status)


class MethodNotAllowed(ApiError):
    status = 405
    type = openai_error_type(status)
    code = "method_not_allowed"


class PayloadTooLarge(ApiError):
    status = 413
    type = openai_error_type(status)
    code = "request_too_large"


class RateLimited(ApiError):
    """Over a limit of the key or the role: Retry-After and OpenAI's x-ratelimit-* headers say when."""

    status = 429
    type = "requests"  # OpenAI's word for which limit: "requests" or "tokens"
    code = "rate_limit_exceeded"


class BudgetExceeded(ApiError):
    """A budget is spent: the key's own, or that of every backend that could serve the role."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class UpstreamError(ApiError):
    """The backend answered with an error; its status and Retry-After reach the client unchanged."""

    type = "upstream_error"


class NoHealthyTarget(ApiError):
    """Every candidate of the role (and its fallbacks) failed, or none could be tried."""

    status = 503
    type = "service_unavailable"
    code = "no_healthy_target"


class OutOfResources(ApiError):
    """The gateway's own process is out of a resource (EMFILE, ENFILE, ENOMEM, ENOBUFS) while opening
    a connection: not a backend's failure, so it ejects nothing and marks no backend down."""

    status = 503
    type = "service_unavailable"
    code = "gateway_out_of_resources"


class UpstreamFailure(FabricError):
    """One failed attempt at one target. Internal: the retry loop reads `failure` and decides.

    `request_suspect`: the backend accepted the connection and the request, then closed it without
    answering. That may be the request's doing (a body its parser chokes on) as much as the backend's,
    so the request is not spread to other targets and the failure alone ejects nothing.
    """

    def __init__(
        self,
        failure: FailureClass,
        detail: str,
        *,
        status: int | None = None,
        body: bytes = b"",
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        request_suspect: bool = False,
        sent: bool = False,
    ) -> None:
        super().__init__(f"{failure}: {detail}")
        self.request_suspect = request_suspect
        # The request reached the backend before the failure (a timeout waiting for its answer), so
        # it may have spent tokens on it; a failure with a response object says so by itself.
        self.sent = sent
        self.failure = failure
        self.detail = detail
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.headers = headers or {}
        self.backend: str | None = None  # set by the forwarder: which backend failed


class LocalBackendError(FabricError):
    """A local backend (one `aifabric up` launches) could not be started or kept running."""


class StateStoreError(FabricError):
    """The shared state store (Redis, or the workers' directory) failed or is missing its package.
    At start-up it stops the gateway with this message; while serving, the gateway carries on alone."""


class CommandError(FabricError):
    """A CLI command failed for a reason the operator can act on; printed without a traceback."""

    def __init__(self, message: str, exit_code: int = exit_codes.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code
