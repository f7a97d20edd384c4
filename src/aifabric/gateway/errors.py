"""The one place an `ApiError` becomes an HTTP response: OpenAI's error shape, the right status."""

from __future__ import annotations

import orjson

from aifabric.core import openai_error_type
from aifabric.errors import ApiError
from aifabric.http.server import Response

__all__ = ["error_body", "error_response", "status_error", "status_exception"]


def error_body(message: str, type: str, code: str | int | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def error_response(exc: ApiError, extra_headers: list[tuple[str, str]] | None = None) -> Response:
    headers = list(exc.headers.items())
    if extra_headers:
        headers.extend(extra_headers)
    return Response(exc.status, error_body(exc.message, exc.type, exc.code, exc.param), headers)


def status_exception(status: int, message: str) -> ApiError:
    """The listener's own errors (malformed HTTP, body too large, a bug) as an `ApiError`."""
    code = "request_too_large" if status == 413 else None
    return ApiError(message, status=status, type=openai_error_type(status), code=code)


def status_error(status: int, message: str, path: str = "") -> Response:
    """For the listener's own errors, OpenAI-shaped (the gateway answers them by the path's API)."""
    return error_response(status_exception(status, message))
