"""The one place an `ApiError` becomes an HTTP response: OpenAI's error shape, the right status, the
request id in a header and in the message."""

from __future__ import annotations

import orjson

from aifabric.core import openai_error_type
from aifabric.errors import ApiError
from aifabric.gateway.request_ids import new_request_id
from aifabric.http.server import Response
from aifabric.observability.logging import redact

__all__ = ["error_body", "error_response", "status_error", "status_exception"]


def error_body(message: str, type: str, code: str | int | None = None, param: str | None = None) -> bytes:
    # Redacted by value: an upstream's error may quote the key the gateway sent it.
    error = {"message": redact(message), "type": type, "param": param, "code": code}
    try:
        return orjson.dumps({"error": error})
    except TypeError:  # a lone surrogate in a client's text: shown escaped, never a failed answer
        error = {
            k: v.encode("utf-8", "backslashreplace").decode() if isinstance(v, str) else v
            for k, v in error.items()
        }
        return orjson.dumps({"error": error})


def error_response(exc: ApiError) -> Response:
    """`exc` in OpenAI's shape, its status and headers kept (the gateway tags it with the request id
    first: see `gateway.app`)."""
    return Response(
        exc.status, error_body(exc.message, exc.type, exc.code, exc.param), list(exc.headers.items())
    )


def status_exception(status: int, message: str) -> ApiError:
    """The listener's own errors (malformed HTTP, body too large, a bug) as an `ApiError`."""
    code = "request_too_large" if status == 413 else None
    return ApiError(message, status=status, type=openai_error_type(status), code=code)


def status_error(status: int, message: str, path: str = "") -> Response:
    """For the listener's own errors (malformed HTTP, body too large, a bug): OpenAI-shaped, with a
    request id of their own (the request's head may not even have been read). The gateway answers
    them in the shape of the path's API (`Gateway.listener_error`)."""
    rid = new_request_id()
    exc = status_exception(status, f"{message} (request id {rid})")
    return Response(status, error_body(exc.message, exc.type, exc.code), [("x-request-id", rid)])
