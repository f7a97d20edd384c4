"""Each kind's real error bodies: classified into the failure classes, normalized to OpenAI's shape."""

from __future__ import annotations

import json

import pytest

from aifabric.backends.base import adapter_for
from aifabric.config.schema import BACKEND_KINDS
from aifabric.core import FailureClass


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


LLAMA_SERVER_CONTEXT_MESSAGE = (
    "request (3012 tokens) exceeds the available context size (2048 tokens), try increasing it"
)
LLAMA_SERVER_CONTEXT_EXCEEDED = {
    "error": {
        "code": 400,
        "message": LLAMA_SERVER_CONTEXT_MESSAGE,
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 3012,
        "n_ctx": 2048,
    }
}

# (kind, status, headers, body, failure class, normalized message, normalized code)
CASES = [
    # vLLM (>= 0.6): OpenAI-like envelope with an integer code
    (
        "vllm",
        404,
        {},
        body(
            {
                "error": {
                    "message": "The model `bge-base-en-v1.5` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                }
            }
        ),
        FailureClass.MODEL_NOT_FOUND,
        "The model `bge-base-en-v1.5` does not exist.",
        "model_not_found",
    ),
    # older vLLM: flat ErrorResponse
    (
        "vllm",
        400,
        {},
        body(
            {
                "object": "error",
                "message": "This model's maximum context length is 4096 tokens.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        ),
        FailureClass.CLIENT_ERROR,
        "This model's maximum context length is 4096 tokens.",
        "context_length_exceeded",
    ),
    (
        "vllm",
        401,
        {},
        body({"error": "Unauthorized"}),
        FailureClass.AUTH,
        "Unauthorized",
        "upstream_auth_failed",
    ),
    # llama-server
    (
        "llamacpp",
        503,
        {},
        body({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}),
        FailureClass.LOADING,
        "Loading model",
        "model_loading",
    ),
    (
        "llamacpp",
        400,
        {},
        body(
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the context size",
                    "type": "invalid_request_error",
                }
            }
        ),
        FailureClass.CLIENT_ERROR,
        "the request exceeds the context size",
        "context_length_exceeded",
    ),
    # llama-server's own words for a prompt over a slot's context (ERROR_TYPE_EXCEED_CONTEXT_SIZE)
    (
        "llamacpp",
        400,
        {},
        body(LLAMA_SERVER_CONTEXT_EXCEEDED),
        FailureClass.CLIENT_ERROR,
        LLAMA_SERVER_CONTEXT_MESSAGE,
        "context_length_exceeded",
    ),
    (
        "llamacpp",
        400,
        {},
        body(
            {
                "error": {
                    "code": 400,
                    "message": "'messages' must be an array",
                    "type": "invalid_request_error",
                }
            }
        ),
        FailureClass.CLIENT_ERROR,
        "'messages' must be an array",
        None,
    ),
    # llama-cpp-python: FastAPI's detail for errors raised outside its OpenAI wrapper
    ("llama-cpp-python", 500, {}, body({"detail": "boom"}), FailureClass.UPSTREAM_5XX, "boom", None),
    (
        "llama-cpp-python",
        422,
        {},
        body({"detail": [{"loc": ["body", "messages"], "msg": "Field required", "type": "missing"}]}),
        FailureClass.CLIENT_ERROR,
        "Field required",
        None,
    ),
    # Ollama: native flat error, and its OpenAI layer
    (
        "ollama",
        404,
        {},
        body({"error": 'model "llama3" not found, try pulling it first'}),
        FailureClass.MODEL_NOT_FOUND,
        'model "llama3" not found, try pulling it first',
        "model_not_found",
    ),
    (
        "ollama",
        400,
        {},
        body(
            {
                "error": {
                    "message": 'model "x" not found, try pulling it first',
                    "type": "api_error",
                    "param": None,
                    "code": None,
                }
            }
        ),
        FailureClass.MODEL_NOT_FOUND,
        'model "x" not found, try pulling it first',
        "model_not_found",
    ),
    # TEI: flat {"error", "error_type"}
    (
        "tei",
        413,
        {},
        body({"error": "batch size 64 > maximum allowed batch size 32", "error_type": "Validation"}),
        FailureClass.CLIENT_ERROR,
        "batch size 64 > maximum allowed batch size 32",
        None,
    ),
    (
        "tei",
        429,
        {},
        body({"error": "Model is overloaded", "error_type": "Overloaded"}),
        FailureClass.OVERLOADED,
        "Model is overloaded",
        "rate_limit_exceeded",
    ),
    (
        "tei",
        424,
        {},
        body({"error": "inference failed", "error_type": "Backend"}),
        FailureClass.UPSTREAM_5XX,
        "inference failed",
        None,
    ),
    # OpenAI
    (
        "openai",
        429,
        {"retry-after": "2"},
        body(
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
        ),
        FailureClass.OVERLOADED,
        "Rate limit reached",
        "rate_limit_exceeded",
    ),
    (
        "openai",
        401,
        {},
        body(
            {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
        ),
        FailureClass.AUTH,
        "Incorrect API key provided",
        "invalid_api_key",
    ),
    # anything: a proxy's HTML page, an empty body
    (
        "vllm",
        502,
        {},
        b"<html><body>Bad Gateway</body></html>",
        FailureClass.UPSTREAM_5XX,
        "<html><body>Bad Gateway</body></html>",
        None,
    ),
    ("openai", 500, {}, b"", FailureClass.UPSTREAM_5XX, "the backend answered HTTP 500", None),
    (
        "vllm",
        503,
        {"Retry-After": "5"},
        b"",
        FailureClass.OVERLOADED,
        "the backend answered HTTP 503",
        "rate_limit_exceeded",
    ),
    ("vllm", 503, {}, b"", FailureClass.UPSTREAM_5XX, "the backend answered HTTP 503", None),
    # loading wins over Retry-After: the data plane can hold the request through the warm-up
    (
        "aifabric-embed",
        503,
        {"retry-after": "1"},
        body({"status": "loading"}),
        FailureClass.LOADING,
        "the backend answered HTTP 503",
        "model_loading",
    ),
    ("vllm", 504, {}, b"", FailureClass.TIMEOUT, "the backend answered HTTP 504", "timeout"),
]


@pytest.mark.parametrize(("kind", "status", "headers", "raw", "failure", "message", "code"), CASES)
def test_classify_and_normalize(
    kind: str,
    status: int,
    headers: dict[str, str],
    raw: bytes,
    failure: FailureClass,
    message: str,
    code: str | None,
) -> None:
    adapter = adapter_for(kind)
    assert adapter.classify(status, headers, raw) is failure
    err = adapter.normalize_error(status, raw, headers)
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] == message
    assert err["code"] == code
    assert isinstance(err["type"], str) and err["type"].islower()


def test_a_prompt_over_the_context_is_openais_context_length_exceeded() -> None:
    # llama-server's type is its own; clients that trim and resend key on OpenAI's type and code.
    err = adapter_for("llamacpp").normalize_error(400, body(LLAMA_SERVER_CONTEXT_EXCEEDED))
    assert (err["type"], err["code"]) == ("invalid_request_error", "context_length_exceeded")
    assert "2048 tokens" in err["message"]
    # The same words in a 5xx are the backend's failure, not the request's: no client-error code.
    failed = adapter_for("llamacpp").normalize_error(500, body(LLAMA_SERVER_CONTEXT_EXCEEDED))
    assert failed["code"] is None


def test_backend_type_kept_when_openai_shaped_otherwise_derived_from_status() -> None:
    llama = adapter_for("llamacpp").normalize_error(
        503, body({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
    )
    assert llama["type"] == "unavailable_error"
    vllm = adapter_for("vllm").normalize_error(
        404, body({"error": {"message": "x", "type": "NotFoundError", "param": None, "code": 404}})
    )
    assert vllm["type"] == "invalid_request_error"
    assert adapter_for("tei").normalize_error(500, body({"error": "x", "error_type": "Backend"}))["type"] == (
        "server_error"
    )


def test_long_messages_are_cut() -> None:
    err = adapter_for("vllm").normalize_error(500, b"x" * 10_000)
    assert len(err["message"]) == 1000


def test_classify_refuses_success_statuses() -> None:
    with pytest.raises(ValueError):
        adapter_for("vllm").classify(200, {}, b"")


def test_every_kind_has_an_adapter_and_usage_support_is_known() -> None:
    for kind in BACKEND_KINDS:
        assert adapter_for(kind).kind == kind
    assert adapter_for("llama-cpp-python").supports_include_usage is False
    assert adapter_for("vllm").supports_include_usage is True
    with pytest.raises(ValueError, match="unknown backend kind"):
        adapter_for("triton")
