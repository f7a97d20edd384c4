"""Backend errors read once: classify a failed response, and normalize its body to OpenAI's shape.

The shapes met in the field, all handled by one reader (adapters override only what differs):

    OpenAI, llama-server, llama-cpp-python, newer vLLM   {"error": {"message", "type", "param", "code"}}
    older vLLM                                           {"object": "error", "message", "type", "code": 404}
    TEI                                                  {"error": "...", "error_type": "Validation"}
    Ollama                                               {"error": "model \"x\" not found, try pulling it"}
    FastAPI defaults                                     {"detail": "..."} or {"detail": [{"msg": ...}]}
    anything else                                        plain text (or nothing)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from aifabric.core import FailureClass, openai_error_type

__all__ = ["classify_response", "error_message", "normalize_error_body", "parse_json", "route_missing"]

_MAX_MESSAGE = 1000
_LOADING = re.compile(rb"loading", re.IGNORECASE)
# "The model `x` does not exist." (vLLM), "model 'x' not found" (Ollama), "model_not_found" (OpenAI)
_MODEL_MISSING = re.compile(
    rb"model[^\n]{0,200}?(does not exist|not found|not exist)|model_not_found|no such model",
    re.IGNORECASE,
)
_OPENAI_TYPE = re.compile(r"^[a-z][a-z_]*_error$")
# A prompt longer than the model's context is the request's fault (a 400, CLIENT_ERROR: never retried,
# never a failover, never an ejection), and it is said with OpenAI's own code, which clients that trim
# and resend key on. llama-server: type "exceed_context_size_error", "request (N tokens) exceeds the
# available context size (C tokens)"; vLLM and OpenAI: "This model's maximum context length is C tokens".
_CONTEXT_EXCEEDED = re.compile(
    rb"exceed_context_size_error|context_length_exceeded|maximum context length"
    rb"|exceeds the (?:available )?context size",
    re.IGNORECASE,
)

_CODE_BY_FAILURE = {
    FailureClass.MODEL_NOT_FOUND: "model_not_found",
    FailureClass.OVERLOADED: "rate_limit_exceeded",
    FailureClass.LOADING: "model_loading",
    FailureClass.AUTH: "upstream_auth_failed",
    FailureClass.TIMEOUT: "timeout",
}


def parse_json(body: bytes) -> Any:
    """The body as JSON, or None when it is not JSON."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def classify_response(status: int, headers: Mapping[str, str], body: bytes) -> FailureClass:
    """The failure class of an error response (status >= 400), the same way for every kind."""
    if status < 400:
        raise ValueError(f"HTTP {status} is not an error response")
    if status == 429:
        return FailureClass.OVERLOADED
    if status == 503:
        # "Loading" is the more specific signal (a loading server may also send Retry-After): it
        # lets the data plane hold a request through a warm-up instead of failing it.
        if _LOADING.search(body[:4096]):
            return FailureClass.LOADING
        if _header(headers, "retry-after") is not None:
            return FailureClass.OVERLOADED
        return FailureClass.UPSTREAM_5XX
    if status in (401, 403):
        return FailureClass.AUTH
    if status == 404:
        return FailureClass.MODEL_NOT_FOUND
    if status in (408, 504):
        return FailureClass.TIMEOUT
    if status >= 500:
        return FailureClass.UPSTREAM_5XX
    # Some servers answer 400 for an unknown model; that is the fabric's mistake, not the client's.
    if _MODEL_MISSING.search(body[:4096]):
        return FailureClass.MODEL_NOT_FOUND
    return FailureClass.CLIENT_ERROR


def route_missing(status: int, body: bytes) -> bool:
    """Whether the error answer to a native route beyond chat completions (/v1/responses, /v1/messages,
    /v1/rerank, ...) means "no such route on this server" rather than "no such model".

    405 is always a missing route: the path exists (or a catch-all matched) but not for a POST. A 404
    is ambiguous: servers answer an unknown *route* with 404 (llama-server "File Not Found", FastAPI's
    {"detail": "Not Found"}, OpenAI's "Invalid URL (POST /v1/...)", Go's "404 page not found", an
    empty body, a proxy's HTML page) and an unknown *model* with 404 too (vLLM "The model `x` does not
    exist.", Ollama 'model "x" not found', OpenAI's code "model_not_found"). The heuristic: a 404
    whose body names a missing model (`_MODEL_MISSING`, the pattern the classifier already trusts for
    model-not-found 400s) keeps its model-not-found meaning; any other 404 is a missing route. A
    server that words its unknown-model 404 without the word "model" would be read as lacking the
    route: the cost is one translated retry on the same target, not a wrong ejection.
    """
    if status == 405:
        return True
    return status == 404 and _MODEL_MISSING.search(body[:4096]) is None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def error_message(doc: Any, body: bytes) -> tuple[str, Any, Any, Any]:
    """(message, type, param, code) as the backend wrote them, from whichever shape it used."""
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            return (_text(err.get("message")), err.get("type"), err.get("param"), err.get("code"))
        if isinstance(err, str):
            return (err, doc.get("error_type") or doc.get("type"), None, doc.get("code"))
        if "message" in doc:
            return (_text(doc.get("message")), doc.get("type"), doc.get("param"), doc.get("code"))
        detail = doc.get("detail")
        if isinstance(detail, str):
            return (detail, None, None, None)
        if isinstance(detail, list) and detail:
            parts = [_text(d.get("msg")) if isinstance(d, dict) else _text(d) for d in detail]
            return ("; ".join(p for p in parts if p), None, None, None)
    text = body.decode("utf-8", "replace").strip() if doc is None else ""
    return (text, None, None, None)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def normalize_error_body(status: int, body: bytes, failure: FailureClass) -> dict[str, Any]:
    """OpenAI's error object {"message", "type", "param", "code"} from any backend's error body."""
    message, type_, param, code = error_message(parse_json(body), body)
    message = " ".join(message.split())[:_MAX_MESSAGE] or f"the backend answered HTTP {status}"
    if not (isinstance(type_, str) and _OPENAI_TYPE.match(type_)):
        type_ = openai_error_type(status)
    # Integer codes (vLLM's `"code": 404`) repeat the status; a string code is more useful to clients.
    if not isinstance(code, str) or not code:
        code = _CODE_BY_FAILURE.get(failure)
    if failure is FailureClass.CLIENT_ERROR and _CONTEXT_EXCEEDED.search(body[:4096]):
        type_, code = "invalid_request_error", "context_length_exceeded"
    return {
        "message": message,
        "type": type_,
        "param": param if isinstance(param, str) else None,
        "code": code,
    }
