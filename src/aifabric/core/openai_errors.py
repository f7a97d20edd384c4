"""HTTP status -> the `type` of OpenAI's error object, once for the gateway's own errors and for
backend errors normalized to OpenAI's shape.

OpenAI answers `invalid_request_error` for every 4xx caused by the request, 404 included (an unknown
model, an unknown URL: api.openai.com's 404 for `POST /v1/nothing` is `invalid_request_error`, code
`unknown_url`); `not_found_error` is Anthropic's word, not OpenAI's. The exception tree's classes
(`aifabric.errors`) read their `type` here too.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["OPENAI_ERROR_TYPES", "openai_error_type"]

OPENAI_ERROR_TYPES = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "invalid_request_error",
        408: "timeout_error",
        409: "invalid_request_error",
        413: "invalid_request_error",
        422: "invalid_request_error",
        429: "rate_limit_error",
        431: "invalid_request_error",
    }
)


def openai_error_type(status: int) -> str:
    """The error `type` for `status`: the table's, else `server_error` (5xx) or `invalid_request_error`."""
    return OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
